/**
 * Separately published: every publishable package is packed (`npm pack`), the tarballs are
 * installed into an empty directory outside the repository with no workspace (third-party
 * dependencies from the registry), and from there the installed bins run the system:
 * `sysbox-nats-auth init` makes the credentials, nats-server starts on them, every daemon starts
 * from its bin, and one container goes through the gateway's gRPC socket (Register, SubidAlloc,
 * Unregister) with a client built from the installed gateway's .proto. The installed id-shift must
 * load its prebuilt addon (no compiler run at install), and, without it, say what is missing or
 * compile from source. Prints each package's installed size.
 */
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, startProcess } from '@sysbox-mgr-ts/exec';

const repoRoot = resolve(import.meta.dirname, '../../..');
const PACKAGES = [
  'bench-kit',
  'contracts',
  'exec',
  'host-guard',
  'host-native',
  'id-shift',
  'kv-state',
  'metrics',
  'mountinfo',
  'nats-auth',
  'nats-retry',
  'native-addon',
  'service-kit',
  'test-nats',
];
const APPS = ['subid-allocator', 'vol-mgr', 'shiftfs-mgr', 'rootfs-cloner', 'gateway'] as const;
type App = (typeof APPS)[number];
const BIN: Record<App, string> = {
  'subid-allocator': 'sysbox-subid-allocator',
  'vol-mgr': 'sysbox-vol-mgr',
  'shiftfs-mgr': 'sysbox-shiftfs-mgr',
  'rootfs-cloner': 'sysbox-rootfs-cloner',
  gateway: 'sysbox-gateway',
};

interface Proc {
  name: string;
  proc: ReturnType<typeof startProcess>;
  log: string;
}

const dir = mkdtempSync(join(tmpdir(), 'sysbox-pack-install-'));
const tarballs = join(dir, 'tarballs');
const install = join(dir, 'install');
const procs: Proc[] = [];
const node = 'packinstall';
let packed: {
  name: string;
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string }[];
}[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const safeRead = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
const installedBin = (name: string) => join(install, 'node_modules', '.bin', name);
const installedPkg = (name: string) => join(install, 'node_modules', '@sysbox-mgr-ts', name);

describe('packed packages installed outside the repository', () => {
  beforeAll(async () => {
    mkdirSync(tarballs);
    mkdirSync(install);
    const workspaces = [
      ...PACKAGES.map((p) => `packages/${p}`),
      ...[...APPS, 'all-in-one', 'fleet'].map((a) => `apps/${a}`),
    ];
    const pack = await run(
      'npm',
      ['pack', '--json', '--pack-destination', tarballs, ...workspaces.flatMap((w) => ['-w', w])],
      { cwd: repoRoot, timeout: 60_000 },
    );
    packed = JSON.parse(pack.stdout);
    expect(packed.map((p) => p.name).sort()).toEqual(
      workspaces.map((w) => `@sysbox-mgr-ts/${w.split('/')[1]}`).sort(),
    );

    // An empty project of its own: no workspace above it, nothing from the repository but tarballs.
    writeFileSync(
      join(install, 'package.json'),
      JSON.stringify({ name: 'pack-install-probe', private: true }),
    );
    await run(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        ...packed.map((p) => join(tarballs, p.filename)),
      ],
      {
        cwd: install,
        timeout: 150_000,
      },
    );
    cpSync(join(import.meta.dirname, 'driver.mjs'), join(install, 'driver.mjs'));
  }, 240_000);

  afterAll(async () => {
    for (const p of [...procs].reverse()) {
      if (p.proc.exitCode !== null) continue;
      p.proc.kill('SIGTERM');
      const done = await Promise.race([p.proc.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) {
        p.proc.kill('SIGKILL');
        await p.proc;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('installs every package from its tarball; prints installed sizes', () => {
    const rows: string[] = [];
    for (const p of packed) {
      const short = p.name.split('/')[1]!;
      const own = duBytes(installedPkg(short));
      const closure = closureBytes(installedPkg(short));
      rows.push(
        `${p.name.padEnd(32)} ${kib(p.size).padStart(9)} ${kib(own).padStart(10)} ${kib(closure).padStart(12)}`,
      );
    }
    const total = duBytes(join(install, 'node_modules'));
    process.stdout.write(
      `\n${'package'.padEnd(32)} ${'tarball'.padStart(9)} ${'installed'.padStart(10)} ${'+ its deps'.padStart(12)}\n${rows.join('\n')}\n` +
        `all of node_modules: ${kib(total)}\n`,
    );
    for (const a of APPS) expect(existsSync(installedBin(BIN[a]))).toBe(true);
    expect(existsSync(installedBin('sysbox-nats-auth'))).toBe(true);
    expect(existsSync(installedBin('sysbox-fleet'))).toBe(true);
  });

  it('ships no test, fake, fixture or bench code in any tarball', () => {
    // CONTRIBUTING.md "Tests and benches": tests beside the code as *.test.ts, helpers in test/,
    // benches in bench/; the build compiles src/ without the tests, so none of it is packed.
    const testCode =
      /(^|\/)(test|tests|testing|bench|__tests__)\/|\.(test|spec|test-util)\.|(^|\/)(testing|bench)\.|fake|fixture/i;
    const shipped = packed.flatMap((p) =>
      p.files.filter((f) => testCode.test(f.path)).map((f) => `${p.name}: ${f.path}`),
    );
    expect(packed.every((p) => p.files.length > 0)).toBe(true);
    expect(shipped).toEqual([]);
  });

  it('id-shift installs with its prebuilt addon: nothing compiled, and it shifts a tree', async () => {
    const pkg = installedPkg('id-shift');
    expect(existsSync(join(pkg, 'prebuilds', 'linux-x64', 'id_shift.node'))).toBe(true);
    expect(existsSync(join(pkg, 'build'))).toBe(false);
    const tree = makeTree('tree-prebuilt');
    expect(await driver(['shift', pkg, tree])).toEqual({ ok: true, entries: 4 });
    expect(lstatSync(join(tree, 'f')).uid).toBe(100000);
  });

  it('id-shift without a loadable prebuilt: names what is missing, else compiles from source', async () => {
    // A copy inside the install's node_modules (so its own imports resolve) with no prebuilt.
    const copy = join(install, 'node_modules', 'id-shift-no-prebuilt');
    const installScript = join(installedPkg('native-addon'), 'bin', 'install.js');
    cpSync(installedPkg('id-shift'), copy, { recursive: true });
    rmSync(join(copy, 'prebuilds'), { recursive: true });

    const missing = (await driver(['shift', copy, makeTree('tree-missing')])) as {
      ok: boolean;
      code: string;
      message: string;
    };
    expect(missing).toMatchObject({ ok: false, code: 'unsupported' });
    expect(missing.message).toMatch(
      /no prebuilt id_shift.node for linux-x64 loads here and none was compiled/,
    );

    // No compiler, make or python3 on PATH (only node): the install script fails and names them.
    const bare = join(dir, 'bare-bin');
    mkdirSync(bare);
    symlinkSync(process.execPath, join(bare, 'node'));
    const noCc = await run(join(bare, 'node'), [installScript, 'id_shift.node'], {
      cwd: copy,
      timeout: 30_000,
      env: { PATH: bare, CC: '', npm_config_node_gyp: '' },
      okExitCodes: [1],
    });
    expect(noCc.exitCode).toBe(1);
    expect(noCc.stderr).toMatch(/missing a C compiler \(cc\), make \(make\), python3 \(python3\)/);

    // With a compiler: the install script compiles with node-gyp (npm's, against node's headers).
    const npmRoot = (await run('npm', ['root', '-g'], { timeout: 30_000 })).stdout.trim();
    await run(process.execPath, [installScript, 'id_shift.node'], {
      cwd: copy,
      timeout: 180_000,
      env: {
        npm_config_node_gyp: join(npmRoot, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
        npm_config_nodedir: dirname(dirname(process.execPath)),
      },
    });
    expect(existsSync(join(copy, 'build', 'Release', 'id_shift.node'))).toBe(true);
    const tree = makeTree('tree-compiled');
    expect(await driver(['shift', copy, tree])).toEqual({ ok: true, entries: 4 });
    expect(lstatSync(join(tree, 'f')).uid).toBe(100000);
  }, 200_000);

  /** The host as the split daemons and the all-in-one both run on it. */
  let host: {
    creds: string;
    port: number;
    own: Record<App, string[]>;
    common: (app: App) => string[];
    socket: string;
    rootfsRoot: string;
    subuid: string;
  };

  it('runs nats-server and every daemon from the installed bins through one container lifecycle', async () => {
    const creds = join(dir, 'nats');
    const port = await freePort();
    await run(
      installedBin('sysbox-nats-auth'),
      ['init', '--dir', creds, '--node', node, '--port', String(port), '--store-dir', join(dir, 'jetstream')],
      {
        timeout: 30_000,
      },
    );
    for (const id of [...APPS, 'operator', 'monitor'])
      expect(lstatSync(join(creds, `${id}.nk`)).mode & 0o777).toBe(0o600);

    mkdirSync(join(dir, 'logs'));
    start('nats-server', 'nats-server', ['-c', join(creds, 'nats-server.conf')]);
    await waitFor('nats-server', (log) => /Server is ready/.test(log));

    const etc = join(dir, 'etc');
    mkdirSync(etc);
    const subuid = join(etc, 'subuid');
    const subgid = join(etc, 'subgid');
    const loginDefs = join(etc, 'login.defs');
    writeFileSync(subuid, 'alice:100000:65536\n');
    writeFileSync(subgid, 'alice:100000:65536\n');
    writeFileSync(
      loginDefs,
      'SUB_UID_MIN 100000\nSUB_UID_MAX 600100000\nSUB_GID_MIN 100000\nSUB_GID_MAX 600100000\n',
    );
    const dataRoot = join(dir, 'data');
    const rootfsRoot = join(dir, 'containers');
    mkdirSync(dataRoot);
    mkdirSync(join(rootfsRoot, 'c1', 'rootfs'), { recursive: true });
    const socket = join(dir, 'run', 'sysmgr.sock');
    const subidFiles = ['--subuid-file', subuid, '--subgid-file', subgid];
    const own: Record<App, string[]> = {
      'subid-allocator': [...subidFiles, '--login-defs', loginDefs],
      'vol-mgr': ['--allowed-rootfs-roots', rootfsRoot, ...subidFiles],
      'shiftfs-mgr': ['--no-modprobe'],
      'rootfs-cloner': ['--allowed-rootfs-roots', rootfsRoot, ...subidFiles],
      gateway: ['--socket', socket, ...subidFiles, '--disable-ovfs-on-idmapped-mount'],
    };
    const common = (app: App) => [
      '--nats-url',
      `nats://127.0.0.1:${port}`,
      '--nats-creds',
      join(creds, `${app}.nk`),
      '--node',
      node,
      '--data-root',
      dataRoot,
    ];
    host = { creds, port, own, common, socket, rootfsRoot, subuid };
    for (const app of APPS) {
      start(app, installedBin(BIN[app]), [...common(app), ...own[app]]);
      await waitFor(app, (log) => /"msg":"started"/.test(log));
    }

    const out = (await driver(['lifecycle', socket, join(rootfsRoot, 'c1', 'rootfs')])) as {
      register: { containerConfig: object };
      subidAlloc: { uid: number; gid: number };
    };
    expect(out.register.containerConfig).toBeTruthy();
    // A 65536-id range the allocator's subuid/subgid files delegate (it adds its own pool there).
    const { uid, gid } = out.subidAlloc;
    expect(uid).toBe(gid);
    const delegated = readFileSync(subuid, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(':').map(Number) as [number, number, number]);
    expect(
      delegated.some(([, start, count]) => uid >= start && uid + 65536 <= start + count),
      `${uid} in ${readFileSync(subuid, 'utf8')}`,
    ).toBe(true);

    // The installed inventory, with the monitor identity, sees this node's four services answer.
    const fleet = await run(
      installedBin('sysbox-fleet'),
      ['--nats-url', `nats://127.0.0.1:${port}`, '--nats-creds', join(creds, 'monitor.nk'), '--json'],
      { cwd: install, timeout: 30_000 },
    );
    const report = JSON.parse(fleet.stdout) as {
      nodes: { node: string; services: { service: string; replicas: number; health: string }[] }[];
    };
    expect(report.nodes.map((n) => n.node)).toEqual([node]);
    expect(report.nodes[0]!.services.map((s) => [s.service, s.replicas, s.health])).toEqual([
      ['sysbox-subid', 1, 'ok'],
      ['sysbox-vol', 1, 'ok'],
      ['sysbox-shiftfs', 1, 'ok'],
      ['sysbox-rootfs', 1, 'ok'],
    ]);

    // Clean stop: daemons (exit 0) before the server they drain to (which exits 1 on SIGTERM), each within 10 s.
    for (const p of [...procs].reverse()) {
      p.proc.kill('SIGTERM');
      const r = await Promise.race([p.proc, sleep(10_000).then(() => undefined)]);
      expect(r, `${p.name} did not stop on SIGTERM:\n${safeRead(p.log)}`).toBeDefined();
      if (p.name !== 'nats-server') expect(r!.exitCode, `${p.name} exit:\n${safeRead(p.log)}`).toBe(0);
    }
  }, 120_000);

  it('runs the same lifecycle with all five apps in one process from the installed all-in-one bin', async () => {
    const { creds, port, own, socket, rootfsRoot } = host;
    start('nats-server-2', 'nats-server', ['-c', join(creds, 'nats-server.conf')]);
    await waitFor('nats-server-2', (log) => /Server is ready/.test(log));
    mkdirSync(join(rootfsRoot, 'c2', 'rootfs'), { recursive: true });
    const args = [
      '--nats-url',
      `nats://127.0.0.1:${port}`,
      '--creds-dir',
      creds,
      '--node',
      node,
      '--data-root',
      join(dir, 'data'),
      ...APPS.flatMap((a) => own[a]),
    ];
    start('all-in-one', installedBin('sysbox-mgr-ts'), args);
    await waitFor('all-in-one', (log) => /"apps":\[[^\]]*\],"msg":"started"/.test(log));
    const out = (await driver(['lifecycle', socket, join(rootfsRoot, 'c2', 'rootfs')])) as {
      subidAlloc: { uid: number };
    };
    expect(out.subidAlloc.uid).toBeGreaterThanOrEqual(100000);
    for (const name of ['all-in-one', 'nats-server-2']) {
      const p = procs.find((x) => x.name === name)!;
      p.proc.kill('SIGTERM');
      const r = await Promise.race([p.proc, sleep(10_000).then(() => undefined)]);
      expect(r, `${name} did not stop on SIGTERM:\n${safeRead(p.log)}`).toBeDefined();
      if (name === 'all-in-one') expect(r!.exitCode, safeRead(p.log)).toBe(0);
    }
  }, 120_000);
});

function start(name: string, file: string, args: string[]): void {
  const log = join(dir, 'logs', `${name}.log`);
  procs.push({ name, proc: startProcess(file, args, { output: { file: log }, cwd: install }), log });
}

async function waitFor(name: string, ready: (log: string) => boolean): Promise<void> {
  const p = procs.find((x) => x.name === name)!;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (p.proc.exitCode !== null) throw new Error(`${name} exited early:\n${safeRead(p.log)}`);
    if (ready(safeRead(p.log))) return;
    await sleep(50);
  }
  throw new Error(`${name} not ready in 20 s:\n${safeRead(p.log)}`);
}

/** Runs the driver with node from the install directory, so it resolves only installed packages. */
async function driver(args: string[]): Promise<unknown> {
  const r = await run(process.execPath, [join(install, 'driver.mjs'), ...args], {
    cwd: install,
    timeout: 60_000,
  });
  return JSON.parse(r.stdout);
}

/** A small tree owned by root: the root dir, a dir, a file, a symlink (4 entries). */
function makeTree(name: string): string {
  const tree = join(dir, name);
  mkdirSync(join(tree, 'd'), { recursive: true });
  writeFileSync(join(tree, 'f'), 'x');
  chmodSync(join(tree, 'f'), 0o644);
  symlinkSync('f', join(tree, 'l'));
  return tree;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

/** Bytes of the files under `path` (apparent sizes), not following symlinks. */
function duBytes(path: string, skipNodeModules = false): number {
  const st = lstatSync(path);
  if (!st.isDirectory()) return st.size;
  let sum = 0;
  for (const e of readdirSync(path)) {
    if (skipNodeModules && e === 'node_modules') continue;
    sum += duBytes(join(path, e), skipNodeModules);
  }
  return sum;
}

/** A package plus everything its dependencies install, each package directory counted once. */
function closureBytes(pkgDir: string): number {
  const seen = new Set<string>();
  const visit = (d: string): void => {
    if (seen.has(d)) return;
    seen.add(d);
    const pj = JSON.parse(readFileSync(join(d, 'package.json'), 'utf8')) as {
      dependencies?: object;
      optionalDependencies?: object;
    };
    for (const dep of Object.keys({ ...pj.dependencies, ...pj.optionalDependencies })) {
      const found = locate(d, dep);
      if (found) visit(found);
    }
  };
  visit(pkgDir);
  return [...seen].reduce((sum, d) => sum + duBytes(d, true), 0);
}

/** Where node would find `dep` from `from`: its node_modules, then each parent's. */
function locate(from: string, dep: string): string | undefined {
  for (let d = from; d.startsWith(install); d = dirname(d)) {
    const candidate = join(d, 'node_modules', dep);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
  }
  return undefined;
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;
