// Runs inside the install directory (outside the repository), so every import below resolves
// from the installed tarballs and their registry dependencies, never from the workspace.
//   node driver.mjs lifecycle <socket> <rootfs>   one container through the gateway's gRPC socket
//   node driver.mjs shift <package dir> <tree>    the installed id-shift (or a copy) shifts a tree by 100000
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [cmd, ...args] = process.argv.slice(2);

if (cmd === 'lifecycle') {
  const [socket, rootfs] = args;
  // The gateway package ships its .proto; grpc-js and proto-loader are its own dependencies.
  const gatewayRequire = createRequire(resolveHere('@sysbox-mgr-ts/gateway/package.json'));
  const grpc = gatewayRequire('@grpc/grpc-js');
  const protoLoader = gatewayRequire('@grpc/proto-loader');
  const proto = gatewayRequire.resolve('@sysbox-mgr-ts/gateway/proto/sysboxMgr.proto');
  const def = protoLoader.loadSync(proto, {
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: true,
    oneofs: true,
  });
  const Client = grpc.loadPackageDefinition(def).protobuf.sysboxMgrStateChannel;
  const client = new Client(`unix:${socket}`, grpc.credentials.createInsecure());
  const rpc = (method, req) =>
    new Promise((resolve, reject) =>
      client[method](req, { deadline: Date.now() + 30_000 }, (err, res) =>
        err ? reject(new Error(`${method}: ${err.message}`)) : resolve(res),
      ),
    );
  const id = 'pack-install-c1';
  const out = {};
  out.register = await rpc('Register', {
    id,
    rootfs,
    userns: '',
    netns: '',
    uidMappings: [],
    gidMappings: [],
  });
  out.subidAlloc = await rpc('SubidAlloc', { id, size: 65536 });
  out.unregister = await rpc('Unregister', { id });
  client.close();
  process.stdout.write(JSON.stringify(out));
} else if (cmd === 'shift') {
  const [pkgDir, tree] = args;
  const { shift } = await import(pathToFileURL(join(pkgDir, 'dist', 'index.js')).href);
  try {
    const r = await shift(tree, 100000, 100000);
    process.stdout.write(JSON.stringify({ ok: true, entries: r.entries }));
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, code: err.code, message: err.message }));
  }
} else {
  process.stderr.write(`driver: unknown command ${cmd}\n`);
  process.exit(2);
}

function resolveHere(spec) {
  return createRequire(join(process.cwd(), 'package.json')).resolve(spec);
}
