/**
 * The one place that decides whether a NATS or JetStream failure is worth waiting out. A failover
 * (a server lost, a JetStream leader election, a reconnect) shows up as no responders, a 503,
 * "JetStream not enabled" or "temporarily unavailable" for a few seconds; those are transient.
 * A time-out is transient only for an operation that may safely run twice (a read, a CAS write
 * that fails if it already landed): a request that timed out may have been carried out.
 * Everything else (permissions, bad requests, conflicts) is permanent and fails at once.
 */
import { NoRespondersError, RequestError, TimeoutError, ConnectionError } from '@nats-io/nats-core';
import { JetStreamApiError, JetStreamError } from '@nats-io/jetstream';

export interface Classification {
  /** May safely run the operation again: a time-out counts as transient. */
  idempotent: boolean;
}

/** JetStream API error codes seen during elections and restarts. */
const TRANSIENT_JS_CODES = new Set([
  10008, // JetStream system temporarily unavailable
  10039, // JetStream not enabled for account (while the meta layer has no leader)
  10076, // JetStream not enabled
  10023, // insufficient resources: no current peers (cluster shrinking or restarting)
]);
const TRANSIENT_TEXT =
  /jetstream (is )?not enabled|temporarily unavailable|no (suitable )?peers|no responders|leader|not current|stream is offline|cluster/i;

export function isTransient(err: unknown, how: Classification): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof NoRespondersError || (e instanceof RequestError && e.isNoResponders())) return true;
    if (e instanceof JetStreamApiError) {
      if (e.status === 503 || TRANSIENT_JS_CODES.has(e.code)) return true;
      return TRANSIENT_TEXT.test(e.message) && !/wrong last sequence/i.test(e.message);
    }
    // JetStreamNotEnabled and status errors (a 503 from a JetStream request) are JetStreamErrors.
    if (e instanceof JetStreamError && TRANSIENT_TEXT.test(e.message)) return true;
    if (e instanceof TimeoutError) return how.idempotent;
    // The connection is reconnecting: a request could not be sent, or its reply was lost.
    if (e instanceof ConnectionError && /disconnect|reconnect/i.test(e.message)) return how.idempotent;
    if (/^503\b|no responders|jetstream not enabled|temporarily unavailable/i.test(e.message)) return true;
  }
  return false;
}

export interface RetryOptions extends Classification {
  /** Epoch ms after which no new attempt starts. */
  deadline: number;
  /** Called before each wait: for a log line. */
  onRetry?: (err: unknown, attempt: number, waitMs: number) => void;
  signal?: AbortSignal;
}

/**
 * Runs `attempt` until it succeeds, fails permanently, or the deadline passes; `attempt` gets the
 * time left, to bound its own request. Waits grow from 25 ms to 500 ms (an election takes a few
 * seconds; a restarting daemon about one).
 */
export async function retryTransient<T>(
  attempt: (remainingMs: number) => Promise<T>,
  opts: RetryOptions,
): Promise<T> {
  for (let n = 1; ; n++) {
    const remaining = opts.deadline - Date.now();
    try {
      return await attempt(Math.max(1, remaining));
    } catch (err) {
      // The last wait is cut to the deadline, so one last attempt runs at the deadline itself.
      const wait = Math.min(500, 25 * 2 ** (n - 1), opts.deadline - Date.now());
      if (!isTransient(err, opts) || opts.signal?.aborted || wait <= 0) throw err;
      opts.onRetry?.(err, n, wait);
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}
