/**
 * A gRPC client for the gateway socket, built from the shipped .proto the way any third-party
 * client would be (keepCase: the wire names sysbox-runc uses), independent of the gateway's code.
 */
import { credentials, loadPackageDefinition, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { join } from 'node:path';
import { repoRoot } from './harness.js';

export type SysboxMgrClient = Client & Record<string, Function>;

const PROTO = join(repoRoot, 'apps', 'gateway', 'proto', 'sysboxMgr.proto');

let ctor:
  | (new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => SysboxMgrClient)
  | undefined;

export function connectGateway(socket: string): SysboxMgrClient {
  if (!ctor) {
    const def = loadSync(PROTO, {
      keepCase: true,
      longs: Number,
      enums: Number,
      defaults: true,
      oneofs: true,
    });
    const pkg = loadPackageDefinition(def) as unknown as { protobuf: { sysboxMgrStateChannel: typeof ctor } };
    ctor = pkg.protobuf.sysboxMgrStateChannel;
  }
  return new ctor!(`unix:${socket}`, credentials.createInsecure());
}

export interface CallRecord {
  method: string;
  id: string;
  startedAt: number;
  ms: number;
  code: number;
}

let callObserver: ((c: CallRecord) => void) | undefined;

/** Scenarios that explain their latency (the cluster's) see every call: method, container, time, status. */
export function observeCalls(observer: ((c: CallRecord) => void) | undefined): void {
  callObserver = observer;
}

/** One unary call; rejects with the gRPC ServiceError. */
export function rpc<T = any>(
  client: SysboxMgrClient,
  method: string,
  req: object,
  deadlineMs = 60_000,
): Promise<T> {
  const startedAt = Date.now();
  return new Promise((resolve, reject) => {
    const fn = client[method];
    if (!fn) throw new Error(`no rpc ${method}`);
    fn.call(client, req, { deadline: startedAt + deadlineMs }, (err: ServiceError | null, res: T) => {
      callObserver?.({
        method,
        id: String((req as { id?: unknown }).id ?? ''),
        startedAt,
        ms: Date.now() - startedAt,
        code: err?.code ?? 0,
      });
      if (err) reject(err);
      else resolve(res);
    });
  });
}

/** The status an rpc fails with, or undefined when it succeeds. */
export async function statusOf(p: Promise<unknown>): Promise<{ code: number; details: string } | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    const e = err as ServiceError;
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, details: e.details };
  }
}
