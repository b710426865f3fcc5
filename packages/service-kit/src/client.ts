/**
 * A typed client of the services: validates requests before sending and replies on receipt,
 * and turns error replies, time-outs and missing responders into typed SysboxErrors.
 */
import {
  NoRespondersError,
  RequestError,
  TimeoutError,
  headers,
  type Msg,
  type NatsConnection,
} from '@nats-io/nats-core';
import { SysboxError, type Contract, type ReplyOf, type RequestInputOf } from '@sysbox-mgr-ts/contracts';
import { retryTransient } from '@sysbox-mgr-ts/nats-retry';
import type { Logger } from 'pino';
import { REQUEST_ID_HEADER, decodeJson, encodeJson, errorFromReply } from './wire.js';

export interface CallOptions {
  /** Milliseconds to wait for the reply: the bound of the whole call, waits included. */
  timeoutMs?: number;
  reqId?: string;
}

export interface ServiceClientOptions {
  node: string;
  timeoutMs?: number;
  /**
   * How long a call waits, within its bound, for a service that has no responder (restarting,
   * or its NATS server failing over) before it fails with `unavailable`. A request nobody
   * received was not carried out, so sending it again duplicates nothing. 0: fail at once.
   */
  waitForResponderMs?: number;
  log?: Logger;
}

export interface ServiceClient {
  readonly node: string;
  call<C extends Contract>(contract: C, payload: RequestInputOf<C>, opts?: CallOptions): Promise<ReplyOf<C>>;
}

export function createServiceClient(nc: NatsConnection, opts: ServiceClientOptions): ServiceClient {
  const defaultTimeout = opts.timeoutMs ?? 5000;
  /**
   * Calls waiting for a reply, told when the connection came back: a reply sent while it was down
   * was dropped by the server, so an idempotent call sends its request again instead of waiting
   * out its whole bound (measured on a cluster: a removal stuck for the 9-minute long-op bound).
   */
  const waitingForReply = new Set<() => void>();
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'reconnect') for (const wake of waitingForReply) wake();
    }
  })();

  /** The reply, or 'lost' when the connection came back before it. */
  const replyOrLost = async (send: () => Promise<Msg>): Promise<Msg | 'lost'> => {
    let wake!: () => void;
    const lost = new Promise<'lost'>((resolve) => (wake = () => resolve('lost')));
    waitingForReply.add(wake);
    const reply = send();
    try {
      const r = await Promise.race([reply, lost]);
      // The abandoned request still settles later; nobody waits for it.
      if (r === 'lost') reply.catch(() => undefined);
      return r;
    } finally {
      waitingForReply.delete(wake);
    }
  };

  return {
    node: opts.node,
    async call(contract, payload, callOpts = {}) {
      const subject = contract.subject(opts.node);
      const parsed = contract.request.safeParse(payload);
      if (!parsed.success) {
        const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
        throw new SysboxError('invalid-request', `${contract.endpoint}: ${why}`);
      }
      const h = callOpts.reqId ? headers() : undefined;
      if (callOpts.reqId) h!.set(REQUEST_ID_HEADER, callOpts.reqId);
      const timeout = callOpts.timeoutMs ?? defaultTimeout;
      const started = Date.now();
      const deadline = started + timeout;
      const data = encodeJson(parsed.data);
      // Only the wait for a responder is retried (idempotent: false): a request that timed out
      // may have been carried out, and the caller decides whether to send it again.
      const send = (): Promise<Msg> =>
        retryTransient(() => nc.request(subject, data, { timeout: Math.max(1, deadline - Date.now()), headers: h }), {
          idempotent: false,
          deadline: Math.min(deadline, started + (opts.waitForResponderMs ?? 0)),
          onRetry: (err, attempt, waitMs) => opts.log?.debug({ subject, attempt, waitMs, err: (err as Error).message }, 'no responder yet; waiting'),
        });
      let msg: Msg;
      try {
        if (contract.idempotent || contract.readOnly) {
          for (;;) {
            const r = await replyOrLost(send);
            if (r !== 'lost') {
              msg = r;
              break;
            }
            if (Date.now() >= deadline) throw new TimeoutError();
            opts.log?.warn({ subject }, 'connection came back while waiting for a reply; sending the (idempotent) request again');
          }
        } else {
          msg = await send();
        }
      } catch (err) {
        throw transportError(subject, timeout, err);
      }
      const failure = errorFromReply(msg.data, msg.headers);
      if (failure) throw failure;
      let body: unknown;
      try {
        body = decodeJson(msg.data);
      } catch (err) {
        throw new SysboxError('internal', `${subject}: reply is not JSON`, { cause: err });
      }
      const reply = contract.reply.safeParse(body);
      if (!reply.success) {
        throw new SysboxError('internal', `${subject}: reply failed its schema: ${reply.error.message}`);
      }
      return reply.data as ReplyOf<typeof contract>;
    },
  };
}

function transportError(subject: string, timeout: number, err: unknown): SysboxError {
  const noResponders =
    err instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders?.());
  if (noResponders) return new SysboxError('unavailable', `${subject}: no service is running for it`, { cause: err });
  const timedOut = err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError);
  if (timedOut) return new SysboxError('timeout', `${subject}: no reply within ${timeout} ms`, { cause: err });
  return new SysboxError('unavailable', `${subject}: ${(err as Error).message}`, { cause: err });
}
