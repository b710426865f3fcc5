/**
 * sysbox-mgr's gRPC face: protobuf.sysboxMgrStateChannel on a unix socket, with server reflection
 * and grpc.health.v1. Each handler parses its request into the manager's typed input (wire.ts), runs
 * under a time bound, and answers a failure as a gRPC status whose message names the container.
 */
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { chmod, lstat, mkdir, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  Server,
  ServerCredentials,
  status as grpcStatusName,
  type MethodDefinition,
  type ServerUnaryCall,
  type ServiceDefinition,
  type sendUnaryData,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { ReflectionService } from '@grpc/reflection';
import { GRPC_STATUS, SysboxError } from '@sysbox-mgr-ts/contracts';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import { withinTime, type Logger } from '@sysbox-mgr-ts/service-kit';
import type { HealthImplementation } from 'grpc-health-check';
import { sysboxMgrServiceDefinition } from './codec.js';
import type { Manager } from './manager.js';
import { SERVICE_NAME, loadPackage } from './proto.js';
import { RPC_TIME_LIMITS } from './rpc-limits.js';
import { listenFdFromSystemd, startSocketFront } from './socket-front.js';
import { containerConfigToWire, mountToWire, parseRequest, type RpcName } from './wire.js';

const require = createRequire(import.meta.url);

/* eslint-disable @typescript-eslint/no-explicit-any -- wire messages are proto-loader plain objects */
type Rpc = (req: any) => Promise<object>;

/** The 13 rpcs: the request parsed at the edge (wire.ts), one manager call, the reply in wire names. */
export function rpcHandlers(manager: Manager): Record<RpcName, Rpc> {
  return {
    Register: async (r) => ({
      containerConfig: containerConfigToWire(await manager.register(parseRequest('Register', r))),
    }),
    Update: async (r) => (await manager.update(parseRequest('Update', r)), {}),
    Unregister: async (r) => (await manager.unregister(parseRequest('Unregister', r)), {}),
    SubidAlloc: async (r) => manager.subidAlloc(parseRequest('SubidAlloc', r)),
    PrepMounts: async (r) => (await manager.prepMounts(parseRequest('PrepMounts', r)), {}),
    ReqMounts: async (r) => ({
      mounts: (await manager.reqMounts(parseRequest('ReqMounts', r))).map(mountToWire),
    }),
    ReqShiftfsMark: async (r) => ({
      shiftfsMarks: await manager.reqShiftfsMark(parseRequest('ReqShiftfsMark', r)),
    }),
    ReqFsState: async (r) => ({ fsEntries: await manager.reqFsState(parseRequest('ReqFsState', r)) }),
    Pause: async (r) => (await manager.pause(parseRequest('Pause', r)), {}),
    Resume: async (r) => (await manager.resume(parseRequest('Resume', r)), {}),
    ReqCloneRootfs: async (r) => ({ rootfs: await manager.cloneRootfs(parseRequest('ReqCloneRootfs', r)) }),
    ChownClonedRootfs: async (r) => (
      await manager.chownClonedRootfs(parseRequest('ChownClonedRootfs', r)),
      {}
    ),
    RevertClonedRootfsChown: async (r) => (
      await manager.revertClonedRootfsChown(parseRequest('RevertClonedRootfsChown', r)),
      {}
    ),
  };
}

export function grpcServiceImplementation(
  manager: Manager,
  opts: { log: Logger; metrics?: AppMetrics },
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [name, rpc] of Object.entries(rpcHandlers(manager))) {
    impl[name] = (call: ServerUnaryCall<any, object>, callback: sendUnaryData<object>) => {
      const started = performance.now();
      const finish = opts.metrics?.grpcCall(name);
      const id = typeof call.request?.id === 'string' ? call.request.id.slice(0, 128) : undefined;
      // Each RPC's bound is rpc-limits.ts's, never shorter than sysbox-runc's client waits. An
      // unbounded one (ReqMounts: a long sync-in) tells how it goes in the log; a client that goes
      // away is logged (the work finishes, and its retry adopts what it made).
      const limit = RPC_TIME_LIMITS[name as RpcName];
      const unbounded = limit === 'unbounded';
      const progress = unbounded
        ? setInterval(
            () =>
              opts.log.info(
                { rpc: name, id, ms: Math.round(performance.now() - started) },
                'still running: this call has no time limit (rpc-limits.ts)',
              ),
            30_000,
          )
        : undefined;
      progress?.unref();
      let answered = false;
      call.on('cancelled', () => {
        if (!answered)
          opts.log.warn(
            { rpc: name, id, ms: Math.round(performance.now() - started) },
            'the client went away; the call finishes for its retry',
          );
      });
      const reply = unbounded
        ? rpc(call.request)
        : withinTime(rpc(call.request), limit, `${name} for container ${id}`);
      const stopProgress = (): void => {
        answered = true;
        clearInterval(progress);
      };
      void reply.then(stopProgress, stopProgress);
      reply.then(
        (reply) => {
          opts.log.debug({ rpc: name, id, ms: performance.now() - started }, 'ok');
          finish?.('OK');
          callback(null, reply);
        },
        (err: unknown) => {
          const e = SysboxError.from(err);
          const log = e.code === 'internal' ? opts.log.error.bind(opts.log) : opts.log.warn.bind(opts.log);
          log({ rpc: name, id, code: e.code, err: e }, e.message);
          finish?.(grpcStatusName[GRPC_STATUS[e.code]] ?? String(GRPC_STATUS[e.code]));
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
  if (!st.isSocket())
    throw new SysboxError('failed-precondition', `${path} exists and is not a socket; not removing it`);
  if (await socketAnswers(path)) {
    throw new SysboxError('already-exists', `another server is answering on ${path}`);
  }
  await unlink(path);
}

type ServingStatus = 'SERVING' | 'NOT_SERVING';

/** What grpc.health.v1 answers for a service ('' is the whole server). */
export interface HealthStatus {
  setStatus(service: string, status: ServingStatus): void;
}

export interface GrpcServerHandle {
  socketPath: string;
  pidFile: string;
  health: HealthStatus;
  stop(graceMs?: number): Promise<void>;
}

/** The methods by path, with their handlers, that a service's addToServer adds to a server. */
type Methods = Map<string, { def: MethodDefinition<unknown, unknown>; handler: UntypedHandleCall }>;

function methodsOf(addToServer: (server: Server) => void): Methods {
  const methods: Methods = new Map();
  const catcher = {
    addService(service: ServiceDefinition, impl: UntypedServiceImplementation) {
      for (const [name, def] of Object.entries(service)) {
        methods.set(def.path, { def, handler: (impl[name] ?? impl[def.originalName!])! });
      }
    },
  };
  addToServer(catcher as unknown as Server);
  return methods;
}

/**
 * Serves the methods at `paths` ([path, requestStream, responseStream]) at once, but loads their
 * implementation, codec included, on the first call: reflection and health are asked by hand
 * (grpcurl) or by a probe, and they load @grpc/proto-loader and protobufjs and parse .proto files:
 * with codec.ts, 4.2 MB less idle RSS (tools/rss). The first call pays that parse (tens of ms).
 */
function addLazily(server: Server, paths: readonly [string, boolean, boolean][], load: () => Methods): void {
  let loaded: Methods | undefined;
  const real = (path: string) => (loaded ??= load()).get(path)!;
  const service: Record<string, MethodDefinition<unknown, unknown>> = {};
  const impl: UntypedServiceImplementation = {};
  for (const [path, requestStream, responseStream] of paths) {
    service[path] = {
      path,
      requestStream,
      responseStream,
      requestSerialize: (v) => real(path).def.requestSerialize(v),
      requestDeserialize: (b) => real(path).def.requestDeserialize(b),
      responseSerialize: (v) => real(path).def.responseSerialize(v),
      responseDeserialize: (b) => real(path).def.responseDeserialize(b),
    };
    impl[path] = ((...args: unknown[]) =>
      (real(path).handler as (...a: unknown[]) => void)(...args)) as UntypedHandleCall;
  }
  server.addService(service, impl);
}

/** Server reflection, v1 and v1alpha, describing sysboxMgr.proto and grpc.health.v1. */
function addReflection(server: Server): void {
  const paths = ['v1', 'v1alpha'].map(
    (v) =>
      [`/grpc.reflection.${v}.ServerReflection/ServerReflectionInfo`, true, true] as [
        string,
        boolean,
        boolean,
      ],
  );
  addLazily(server, paths, () =>
    methodsOf((s) => {
      const { ReflectionService: Reflection } = require('@grpc/reflection') as {
        ReflectionService: typeof ReflectionService;
      };
      new Reflection(loadPackage()).addToServer(s);
    }),
  );
}

/** grpc.health.v1 (Check, Watch, List), as grpc-health-check answers it. */
function addHealth(server: Server, initial: Record<string, ServingStatus>): HealthStatus {
  const statuses = new Map(Object.entries(initial));
  let health: HealthImplementation | undefined;
  const paths: [string, boolean, boolean][] = [
    ['/grpc.health.v1.Health/Check', false, false],
    ['/grpc.health.v1.Health/Watch', false, true],
    ['/grpc.health.v1.Health/List', false, false],
  ];
  addLazily(server, paths, () =>
    methodsOf((s) => {
      const { HealthImplementation: Health } = require('grpc-health-check') as {
        HealthImplementation: typeof HealthImplementation;
      };
      health = new Health(Object.fromEntries(statuses));
      health.addToServer(s);
    }),
  );
  return {
    setStatus(service, status) {
      statuses.set(service, status);
      health?.setStatus(service, status);
    },
  };
}

export async function startGrpcServer(opts: {
  socketPath: string;
  manager: Manager;
  log: Logger;
  metrics?: AppMetrics;
  /**
   * The listening socket's fd when systemd handed one over; undefined: read LISTEN_FDS and
   * LISTEN_PID (socket activation); null: bind the path whatever the environment says.
   */
  listenFd?: number | null;
}): Promise<GrpcServerHandle> {
  const dir = dirname(opts.socketPath);
  // Only a dir we create is forced to 0700: --socket may point into a shared dir.
  if (!(await lstat(dir).catch(() => undefined))) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
  const listenFd = opts.listenFd === undefined ? listenFdFromSystemd() : (opts.listenFd ?? undefined);
  // A socket systemd holds is never removed here: it queues the clients while the gateway restarts.
  if (listenFd === undefined) await clearStaleSocket(opts.socketPath);

  const server = new Server();
  server.addService(sysboxMgrServiceDefinition(), grpcServiceImplementation(opts.manager, opts));
  addReflection(server);
  const health = addHealth(server, { '': 'SERVING', [SERVICE_NAME]: 'SERVING' });

  // The socket is ours, not grpc-js's: each connection passes the authority rewrite first
  // (socket-front.ts), which lets grpc-go < 1.57 clients in.
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  const front = await startSocketFront({
    socketPath: opts.socketPath,
    listenFd,
    inject: (c) => injector.injectConnection(c),
    log: opts.log,
  });
  if (!front.inherited) await chmod(opts.socketPath, 0o600);
  // A stale pid file from a crashed run is simply replaced: the socket check above is the liveness test.
  const pidFile = join(dir, `${basename(opts.socketPath).replace(/\.sock$/, '')}.pid`);
  await writeFile(pidFile, `${process.pid}\n`, { mode: 0o600 });
  opts.log.info(
    { socket: opts.socketPath, fromSystemd: front.inherited },
    `listening on ${opts.socketPath}${front.inherited ? ' (socket handed over by systemd)' : ''}`,
  );

  return {
    socketPath: opts.socketPath,
    pidFile,
    health,
    async stop(graceMs = 5000) {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(SERVICE_NAME, 'NOT_SERVING');
      const closed = front.close();
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
      await closed;
      if (!front.inherited) await unlink(opts.socketPath).catch(() => undefined);
      await unlink(pidFile).catch(() => undefined);
    },
  };
}
