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
import { randomUUID } from 'node:crypto';
import { SysboxError, type Contract, type ReplyOf, type RequestInputOf } from '@sysbox-mgr-ts/contracts';
import { retryTransient } from '@sysbox-mgr-ts/nats-retry';
import type { Logger } from 'pino';
import { CALL_ID_HEADER, REQUEST_ID_HEADER, decodeJson, encodeJson, errorFromReply } from './wire.js';

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
  /** An idempotent call with no reply yet is sent again after this long, then at doubling intervals. */
  resendAfterMs?: number;
  /**
   * A repeat's error answers an idempotent call once its first request has gone this long without
   * a reply: that request died with the service that took it (SIGKILLed mid-call), and waiting for
   * it would hold the caller for the call's whole bound (11 min for an RPC of sysbox-runc's).
   */
  firstCopyLostAfterMs?: number;
  log?: Logger;
}

const DEFAULT_RESEND_AFTER_MS = 3000;
/** Repeats of a long operation (a big sync-in) stay this far apart. */
const MAX_RESEND_INTERVAL_MS = 60_000;
/** Longer than a replica's half-done window for the operations that are repeated (KV writes, a sync-in's start). */
const DEFAULT_FIRST_COPY_LOST_AFTER_MS = 30_000;

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

  /**
   * An idempotent call's reply. The request goes out again when this connection comes back (a
   * reply sent meanwhile was dropped) and, speculatively, after resendAfterMs and then at doubling
   * intervals: a reply also dies with the service's own server when that member is lost between
   * the service's publish and the route (seen on a cluster: a release waited out its whole bound),
   * and nothing on this side tells that from a service still at work. A repeat waits at the
   * service for the first (its per-key lock) and is answered the same. Any copy's answer is the
   * answer; an error counts only from the copy that still speaks for the call (the first, or the
   * one sent after a reconnect), since a speculative copy reaching another replica mid-operation
   * may see the work half done; until the first has been silent for firstCopyLostAfterMs, when
   * the last repeat's error is the answer (a first copy lost with its service never answers).
   */
  const replyOfIdempotent = async (
    send: () => Promise<Msg>,
    subject: string,
    deadline: number,
  ): Promise<Msg> => {
    type Outcome = { copy: number; msg?: Msg; err?: unknown };
    let resendIn = opts.resendAfterMs ?? DEFAULT_RESEND_AFTER_MS;
    const firstLostAt = Date.now() + (opts.firstCopyLostAfterMs ?? DEFAULT_FIRST_COPY_LOST_AFTER_MS);
    /** The last failure a repeat answered while the first copy stayed silent. */
    let repeatFailure: Outcome | undefined;
    const pending = new Map<number, Promise<Outcome>>();
    let speaking = 0;
    let copies = 0;
    const sendCopy = (): number => {
      const copy = copies++;
      pending.set(
        copy,
        send().then(
          (msg) => ({ copy, msg }),
          (err: unknown) => ({ copy, err }),
        ),
      );
      return copy;
    };
    let wake: () => void = () => undefined;
    try {
      speaking = sendCopy();
      for (;;) {
        const lost = new Promise<'lost'>((resolve) => (wake = () => resolve('lost')));
        waitingForReply.add(wake);
        let timer: NodeJS.Timeout | undefined;
        // Wake for the next resend, or when the first copy counts as lost with a repeat's error in hand.
        const wakeIn =
          repeatFailure && Date.now() < firstLostAt ? Math.min(resendIn, firstLostAt - Date.now()) : resendIn;
        const due = new Promise<'due'>(
          (resolve) =>
            (timer = setTimeout(() => resolve('due'), Math.max(1, Math.min(wakeIn, deadline - Date.now())))),
        );
        const r = await Promise.race([...pending.values(), lost, due]);
        clearTimeout(timer);
        waitingForReply.delete(wake);
        const firstLost = speaking === 0 && Date.now() >= firstLostAt;
        if (typeof r === 'object') {
          const failure = r.msg ? errorFromReply(r.msg.data, r.msg.headers) : r.err;
          if (!failure || r.copy === speaking || firstLost) {
            if (r.msg) return r.msg;
            throw r.err;
          }
          repeatFailure = r;
          pending.delete(r.copy);
          opts.log?.debug(
            { subject, err: (failure as Error).message },
            'a repeated request failed; waiting for the first',
          );
          continue;
        }
        if (Date.now() >= deadline) throw new TimeoutError();
        if (firstLost && repeatFailure) {
          opts.log?.warn({ subject }, 'the first request went unanswered: the last repeat answers it');
          if (repeatFailure.msg) return repeatFailure.msg;
          throw repeatFailure.err;
        }
        if (Date.now() < firstLostAt && repeatFailure && wakeIn < resendIn) continue;
        opts.log?.warn(
          { subject, why: r === 'lost' ? 'connection came back' : `no reply after ${resendIn} ms` },
          'sending the (idempotent) request again: its reply may have been lost',
        );
        if (r === 'lost') speaking = sendCopy();
        else {
          resendIn = Math.min(resendIn * 2, MAX_RESEND_INTERVAL_MS);
          sendCopy();
        }
      }
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
        const why = parsed.error.issues
          .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
          .join('; ');
        throw new SysboxError('invalid-request', `${contract.endpoint}: ${why}`);
      }
      const h = headers();
      // Every copy of this call carries it: the service answers a copy that meets the call still
      // running (or just answered) with that call's outcome instead of running it again.
      h.set(CALL_ID_HEADER, randomUUID());
      if (callOpts.reqId) h.set(REQUEST_ID_HEADER, callOpts.reqId);
      const timeout = callOpts.timeoutMs ?? defaultTimeout;
      const started = Date.now();
      const deadline = started + timeout;
      const data = encodeJson(parsed.data);
      // Only the wait for a responder is retried (idempotent: false): a request that timed out
      // may have been carried out, and the caller decides whether to send it again.
      const send = (): Promise<Msg> =>
        retryTransient(
          () => nc.request(subject, data, { timeout: Math.max(1, deadline - Date.now()), headers: h }),
          {
            idempotent: false,
            deadline: Math.min(deadline, started + (opts.waitForResponderMs ?? 0)),
            onRetry: (err, attempt, waitMs) =>
              opts.log?.debug(
                { subject, attempt, waitMs, err: (err as Error).message },
                'no responder yet; waiting',
              ),
          },
        );
      let msg: Msg;
      try {
        if (contract.idempotent || contract.readOnly) {
          msg = await replyOfIdempotent(send, subject, deadline);
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
  if (noResponders)
    return new SysboxError('unavailable', `${subject}: no service is running for it`, { cause: err });
  const timedOut =
    err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError);
  if (timedOut)
    return new SysboxError('timeout', `${subject}: no reply within ${timeout} ms`, { cause: err });
  return new SysboxError('unavailable', `${subject}: ${(err as Error).message}`, { cause: err });
}
