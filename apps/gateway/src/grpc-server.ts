/**
 * sysbox-mgr's gRPC face: protobuf.sysboxMgrStateChannel on a unix socket, with server reflection
 * and grpc.health.v1. Each handler parses its request into the manager's typed input (wire.ts), runs
 * under a time bound, and answers a failure as a gRPC status whose message names the container.
 */
import { connect } from 'node:net';
import { chmod, lstat, mkdir, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { GRPC_STATUS, SysboxError } from '@sysbox-mgr-ts/contracts';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import { HealthImplementation } from 'grpc-health-check';
import type { Manager } from './manager.js';
import { SERVICE_NAME, loadPackage, sysboxMgrService } from './proto.js';
import { containerConfigToWire, mountToWire, parseRequest, type RpcName } from './wire.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- wire messages are proto-loader plain objects */
type Rpc = (req: any) => Promise<object>;

/** The 13 rpcs: the request parsed at the edge (wire.ts), one manager call, the reply in wire names. */
export function rpcHandlers(manager: Manager): Record<RpcName, Rpc> {
  return {
    Register: async (r) => ({ containerConfig: containerConfigToWire(await manager.register(parseRequest('Register', r))) }),
    Update: async (r) => (await manager.update(parseRequest('Update', r)), {}),
    Unregister: async (r) => (await manager.unregister(parseRequest('Unregister', r)), {}),
    SubidAlloc: async (r) => manager.subidAlloc(parseRequest('SubidAlloc', r)),
    PrepMounts: async (r) => (await manager.prepMounts(parseRequest('PrepMounts', r)), {}),
    ReqMounts: async (r) => ({ mounts: (await manager.reqMounts(parseRequest('ReqMounts', r))).map(mountToWire) }),
    ReqShiftfsMark: async (r) => ({ shiftfsMarks: await manager.reqShiftfsMark(parseRequest('ReqShiftfsMark', r)) }),
    ReqFsState: async (r) => ({ fsEntries: await manager.reqFsState(parseRequest('ReqFsState', r)) }),
    Pause: async (r) => (await manager.pause(parseRequest('Pause', r)), {}),
    Resume: async (r) => (await manager.resume(parseRequest('Resume', r)), {}),
    ReqCloneRootfs: async (r) => ({ rootfs: await manager.cloneRootfs(parseRequest('ReqCloneRootfs', r)) }),
    ChownClonedRootfs: async (r) => (await manager.chownClonedRootfs(parseRequest('ChownClonedRootfs', r)), {}),
    RevertClonedRootfsChown: async (r) => (await manager.revertClonedRootfsChown(parseRequest('RevertClonedRootfsChown', r)), {}),
  };
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SysboxError('timeout', `${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

export function grpcServiceImplementation(
  manager: Manager,
  opts: { handlerTimeoutMs: number; log: Logger },
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [name, rpc] of Object.entries(rpcHandlers(manager))) {
    impl[name] = (call: ServerUnaryCall<any, object>, callback: sendUnaryData<object>) => {
      const started = performance.now();
      const id = typeof call.request?.id === 'string' ? call.request.id.slice(0, 128) : undefined;
      // ReqMounts is not bounded here: sysbox-runc waits for a long sync-in as long as it takes,
      // and is told how it goes in the log; a client that goes away is logged (the work finishes,
      // and its retry adopts what it made).
      const unbounded = name === 'ReqMounts';
      const progress = unbounded
        ? setInterval(() => opts.log.info({ rpc: name, id, ms: Math.round(performance.now() - started) }, 'still preparing the container mounts'), 30_000)
        : undefined;
      progress?.unref();
      let answered = false;
      call.on('cancelled', () => {
        if (!answered) opts.log.warn({ rpc: name, id, ms: Math.round(performance.now() - started) }, 'the client went away; the call finishes for its retry');
      });
      const reply = unbounded ? rpc(call.request) : bounded(rpc(call.request), opts.handlerTimeoutMs, `${name} for container ${id}`);
      const stopProgress = (): void => {
        answered = true;
        clearInterval(progress);
      };
      void reply.then(stopProgress, stopProgress);
      reply.then(
        (reply) => {
          opts.log.debug({ rpc: name, id, ms: performance.now() - started }, 'ok');
          callback(null, reply);
        },
        (err: unknown) => {
          const e = SysboxError.from(err);
          const log = e.code === 'internal' ? opts.log.error.bind(opts.log) : opts.log.warn.bind(opts.log);
          log({ rpc: name, id, code: e.code, err: e }, e.message);
          callback({ code: GRPC_STATUS[e.code], details: e.message, name: e.code, message: e.message });
        },
      );
    };
  }
  return impl;
}

/** True when something accepts connections on the unix socket. */
function socketAnswers(path: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(timeoutMs, () => done(true));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Removes a socket a crashed run left behind; refuses when a live server owns it or it is no socket. */
export async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new SysboxError('failed-precondition', `${path} exists and is not a socket; not removing it`);
  if (await socketAnswers(path)) {
    throw new SysboxError('already-exists', `another server is answering on ${path}`);
  }
  await unlink(path);
}

export interface GrpcServerHandle {
  socketPath: string;
  pidFile: string;
  health: HealthImplementation;
  stop(graceMs?: number): Promise<void>;
}

export async function startGrpcServer(opts: {
  socketPath: string;
  manager: Manager;
  handlerTimeoutMs: number;
  log: Logger;
}): Promise<GrpcServerHandle> {
  const dir = dirname(opts.socketPath);
  // Only a dir we create is forced to 0700: --socket may point into a shared dir.
  if (!(await lstat(dir).catch(() => undefined))) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
  await clearStaleSocket(opts.socketPath);

  const pkg = loadPackage();
  const server = new Server();
  server.addService(sysboxMgrService(pkg), grpcServiceImplementation(opts.manager, opts));
  new ReflectionService(pkg).addToServer(server);
  const health = new HealthImplementation({ '': 'SERVING', [SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  await new Promise<number>((resolve, reject) =>
    server.bindAsync(`unix:${opts.socketPath}`, ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
  await chmod(opts.socketPath, 0o600);
  // A stale pid file from a crashed run is simply replaced: the socket check above is the liveness test.
  const pidFile = join(dir, `${basename(opts.socketPath).replace(/\.sock$/, '')}.pid`);
  await writeFile(pidFile, `${process.pid}\n`, { mode: 0o600 });
  opts.log.info({ socket: opts.socketPath }, `listening on ${opts.socketPath}`);

  return {
    socketPath: opts.socketPath,
    pidFile,
    health,
    async stop(graceMs = 5000) {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(SERVICE_NAME, 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await unlink(opts.socketPath).catch(() => undefined);
      await unlink(pidFile).catch(() => undefined);
    },
  };
}
