/**
 * The store's writes: compare-and-set creates, updates and deletes that wait out a failover and
 * judge a write whose answer was lost by reading the key back.
 */
import type { Bucket, KvEntry } from '@nats-io/kv';
import type { AppMetrics, KvOp } from '@sysbox-mgr-ts/metrics';
import { isTransient, retryTransient } from '@sysbox-mgr-ts/nats-retry';
import { LostWriteConflict } from './errors.js';
import { removeMessage } from './stream.js';

/** What a write needs of its store. */
export interface WriteContext {
  kv: Bucket;
  /** The key's full KV key (prefix and escaped token). */
  fullKey(key: string): string;
  retryWindowMs: number;
  metrics: AppMetrics | undefined;
  /** A transient failure waited out, counted against the operation that met it. */
  onRetry(op: KvOp): (() => void) | undefined;
  /** A read that may run twice, waiting out a failover. */
  kvRead<R>(fn: () => Promise<R>, op: KvOp): Promise<R>;
}

/**
 * Runs a CAS write, waiting out a failover. A write whose answer was lost (a time-out, a
 * connection lost while it was in flight) may or may not have landed: the key is read back from
 * the leader and `judge` decides. Landed: done. Not landed (the key is as it was): write again.
 * Anything else: someone else wrote, a conflict the caller handles as any other.
 */
async function writeSurely(
  ctx: WriteContext,
  key: string,
  op: KvOp,
  attempt: () => Promise<number | boolean>,
  judge: (entry: KvEntry | null) => 'landed' | 'not-landed' | 'conflict',
): Promise<number> {
  const deadline = Date.now() + ctx.retryWindowMs;
  for (;;) {
    try {
      const r = await retryTransient(attempt, { idempotent: false, deadline, onRetry: ctx.onRetry(op) });
      return typeof r === 'number' ? r : 0;
    } catch (err) {
      const lostAnswer = isTransient(err, { idempotent: true }) && !isTransient(err, { idempotent: false });
      if (!lostAnswer || Date.now() >= deadline) throw err;
      ctx.metrics?.kvRetry(ctx.kv.bucket, op, 'transient');
      const entry = await ctx.kvRead(() => ctx.kv.get(ctx.fullKey(key)), op);
      const verdict = judge(entry);
      if (verdict === 'landed') return entry!.revision;
      if (verdict === 'conflict') throw new LostWriteConflict(key, err);
    }
  }
}

/** `revision` 0 creates (the key must be absent); otherwise updates the key if still at `revision`. */
export function casWrite(ctx: WriteContext, key: string, data: string, revision: number): Promise<number> {
  const attempt = (): Promise<number> =>
    revision === 0 ? ctx.kv.create(ctx.fullKey(key), data) : ctx.kv.update(ctx.fullKey(key), data, revision);
  return writeSurely(ctx, key, revision === 0 ? 'create' : 'update', attempt, (entry) => {
    const live = entry !== null && entry.operation === 'PUT';
    if (live && entry.string() === data && entry.revision > revision) return 'landed';
    if (revision === 0) return live ? 'conflict' : 'not-landed';
    return entry?.revision === revision ? 'not-landed' : 'conflict';
  });
}

/**
 * Deletes the entry if it is still at `revision`: removes the message at that stream sequence,
 * which exists only while it is the key's value (history 1: a newer write replaces it). Nothing
 * is left in the stream; a create after it starts from revision 0 as on a key never written.
 */
export async function casDelete(ctx: WriteContext, key: string, revision: number): Promise<void> {
  await writeSurely(
    ctx,
    key,
    'delete',
    () => removeMessage(ctx.kv, revision),
    (entry) => {
      if (entry?.revision === revision) return 'not-landed';
      return entry === null || entry.operation !== 'PUT' ? 'landed' : 'conflict';
    },
  );
}
