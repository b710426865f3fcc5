/** What grpcurl and health probes see: server reflection lists the service, health answers SERVING. */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { credentials, loadPackageDefinition, type GrpcObject, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manager } from './manager.js';
import { startGrpcServer, type GrpcServerHandle } from './grpc-server.js';

const log = silentLogger();
const require = createRequire(import.meta.url);
const reflectionProto = join(
  dirname(require.resolve('@grpc/reflection/package.json')),
  'build/proto/grpc/reflection/v1/reflection.proto',
);

describe('reflection and health', () => {
  let dir: string;
  let server: GrpcServerHandle;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gw-refl-'));
    server = await startGrpcServer({
      socketPath: join(dir, 'm.sock'),
      manager: {} as Manager,
      log,
    });
  });
  afterAll(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reflection lists protobuf.sysboxMgrStateChannel and grpc.health.v1.Health', async () => {
    const pkg = loadPackageDefinition(loadSync(reflectionProto, { keepCase: true }));
    const Reflection = ((pkg.grpc as GrpcObject).reflection as GrpcObject).v1 as GrpcObject;
    const Ctor = Reflection.ServerReflection as unknown as new (
      a: string,
      c: ReturnType<typeof credentials.createInsecure>,
    ) => any;
    const client = new Ctor(`unix:${server.socketPath}`, credentials.createInsecure());
    const stream = client.ServerReflectionInfo();
    const reply = await new Promise<any>((resolve, reject) => {
      stream.on('data', resolve);
      stream.on('error', reject);
      stream.write({ list_services: '' });
    });
    stream.end();
    client.close();
    const names = reply.list_services_response.service.map((s: { name: string }) => s.name);
    expect(names).toEqual(
      expect.arrayContaining(['protobuf.sysboxMgrStateChannel', 'grpc.health.v1.Health']),
    );
  });

  it('health answers SERVING for the server and the service', async () => {
    const pkg = loadPackageDefinition(loadSync(healthProtoPath, { keepCase: true, enums: String }));
    const Health = (((pkg.grpc as GrpcObject).health as GrpcObject).v1 as GrpcObject)
      .Health as unknown as new (a: string, c: ReturnType<typeof credentials.createInsecure>) => any;
    const client = new Health(`unix:${server.socketPath}`, credentials.createInsecure());
    for (const service of ['', 'protobuf.sysboxMgrStateChannel']) {
      const res = await new Promise<any>((resolve, reject) =>
        client.Check({ service }, (err: ServiceError | null, r: unknown) => (err ? reject(err) : resolve(r))),
      );
      expect(res.status).toBe('SERVING');
    }
    client.close();
  });
});
