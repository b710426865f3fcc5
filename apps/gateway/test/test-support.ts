/** Shared set-up of the gateway's tests and bench: a gateway on a temp socket and its gRPC client. */
import { credentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { sysboxMgrClientConstructor } from '../src/proto.js';

export type GrpcClient = Client & Record<string, Function>;

export function grpcClient(socketPath: string): GrpcClient {
  const Ctor = sysboxMgrClientConstructor();
  return new Ctor(`unix:${socketPath}`, credentials.createInsecure());
}

/** Calls one unary rpc; rejects with the gRPC ServiceError. */
export function rpc<T = any>(
  client: GrpcClient,
  method: string,
  req: object,
  deadlineMs = 15_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method]!(req, { deadline: Date.now() + deadlineMs }, (err: ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    );
  });
}

/** The gRPC status code an rpc fails with (undefined when it succeeds). */
export async function statusOf(p: Promise<unknown>): Promise<{ code: number; details: string } | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    const e = err as ServiceError;
    return { code: e.code, details: e.details };
  }
}

/** One HTTP/2 frame (RFC 9113 4.1) as a client writes it, for tests of the socket front. */
export function http2Frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}
