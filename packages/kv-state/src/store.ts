/** The JetStream-backed state store: cached reads, CAS mutations with retry, lists. */
import type { Bucket, KV, KvEntry } from '@nats-io/kv';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import type { AppMetrics, KvOp } from '@sysbox-mgr-ts/metrics';
import { retryTransient } from '@sysbox-mgr-ts/nats-retry';
import type { z } from 'zod';
import { DEFAULT_RETRY_WINDOW_MS } from './bucket.js';
import { casDelete, casWrite, type WriteContext } from './cas.js';
import { asUnavailable, isConflict, kvCall } from './errors.js';
import { decodeKeyToken, encodeKeyToken } from './keys.js';
import { lastMessages, listKeys, sweepMarker } from './stream.js';
import {
  REMOVE,
  type KvStateStore,
  type Mutation,
  type Snapshot,
  type StoreOptions,
  type Versioned,
} from './types.js';

export function createStateStore<S extends z.ZodType>(
  kv: KV,
  opts: StoreOptions<S>,
): KvStateStore<z.infer<S>> {
  type T = z.infer<S>;
  const prefix = opts.namespace ? `${opts.node}.${opts.namespace}.` : `${opts.node}.`;
  const maxRetries = opts.maxRetries ?? 50;
  const retryWindowMs = opts.retryWindowMs ?? DEFAULT_RETRY_WINDOW_MS;
  const bucket = (kv as Bucket).bucket;
  const { metrics } = opts;
  const onRetry = (op: KvOp) => (metrics ? () => metrics.kvRetry(bucket, op, 'transient') : undefined);
  /** Reads may run twice; a write is retried only when it surely did not land (see nats-retry). */
  const kvRead = <R>(fn: () => Promise<R>, op: KvOp): Promise<R> =>
    kvCall(() =>
      retryTransient(fn, { idempotent: true, deadline: Date.now() + retryWindowMs, onRetry: onRetry(op) }),
    );
  const fullKey = (key: string): string => prefix + encodeKeyToken(key);
  const ctx: WriteContext = { kv: kv as Bucket, fullKey, retryWindowMs, metrics, onRetry, kvRead };

  const parse = (key: string, json: unknown): T => {
    const parsed = opts.schema.safeParse(json);
    if (!parsed.success) {
      throw new SysboxError(
        'internal',
        `state entry ${key} does not match its schema: ${parsed.error.message}`,
      );
    }
    return parsed.data as T;
  };

  /**
   * The last value and revision this store read or wrote per key. A mutation tries it first and
   * skips the read: the CAS write fails if anyone wrote since, and then the key is read afresh.
   * A decision not to write is never taken on a remembered value (it could be stale).
   */
  const known = new Map<string, Snapshot<T>>();
  /**
   * Keys this store deleted while a read or a list was in flight, with the revision deleted: that
   * read may have fetched the value just before the delete and must not put it back into `known`
   * after it (a removed container's record then answered peek() as present, for good: seen in the
   * e2e bench). Cleared when no read is in flight, so it holds only what a running read can race.
   */
  const deletedDuringReads = new Map<string, number>();
  let readsInFlight = 0;
  const reading = async <R>(fn: () => Promise<R>): Promise<R> => {
    readsInFlight++;
    try {
      return await fn();
    } finally {
      if (--readsInFlight === 0) deletedDuringReads.clear();
    }
  };
  /** A value read at `revision` that a delete of this store has since removed. */
  const deletedSince = (key: string, revision: number): boolean =>
    revision <= (deletedDuringReads.get(key) ?? 0);

  const read = (key: string, op: KvOp = 'get'): Promise<Snapshot<T>> =>
    reading(async () => {
      const entry: KvEntry | null = await kvRead(() => kv.get(fullKey(key)), op);
      if (entry && entry.operation !== 'PUT') await sweepMarker(kv as Bucket, entry.revision);
      const snap =
        !entry || entry.operation !== 'PUT'
          ? { value: undefined, revision: 0 }
          : { value: parse(entry.key, entry.json()), revision: entry.revision };
      if (snap.value === undefined || !deletedSince(key, snap.revision)) known.set(key, snap);
      return snap;
    });

  const write = async (key: string, value: T, revision: number): Promise<number> => {
    try {
      const rev = await casWrite(ctx, key, JSON.stringify(value), revision);
      known.set(key, { value, revision: rev });
      return rev;
    } catch (err) {
      known.delete(key);
      throw err;
    }
  };

  const remove = async (key: string, revision: number): Promise<void> => {
    await casDelete(ctx, key, revision);
    known.delete(key);
    if (readsInFlight > 0) deletedDuringReads.set(key, revision);
  };

  const store: KvStateStore<T> = {
    async get(key) {
      const { value, revision } = await read(key);
      return value === undefined ? undefined : { key, value: structuredClone(value), revision };
    },
    list: () =>
      reading(async () => {
        const out: Versioned<T>[] = [];
        for (const m of await kvRead(() => lastMessages(kv as Bucket, prefix), 'list')) {
          if (m.deleted) {
            await sweepMarker(kv as Bucket, m.revision);
            continue;
          }
          const key = decodeKeyToken(m.subject.slice(`${(kv as Bucket).prefix}.${prefix}`.length));
          const value = parse(key, m.json());
          // A list runs beside this store's own writes: one that landed after the list's pass read
          // the key is newer than what the pass saw, and peek() must not go back to the older.
          // Nor may it bring back a key this store deleted after the pass read it.
          if ((known.get(key)?.revision ?? 0) <= m.revision && !deletedSince(key, m.revision))
            known.set(key, { value, revision: m.revision });
          out.push({ key, value: structuredClone(value), revision: m.revision });
        }
        return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      }),
    async keys() {
      return kvRead(() => listKeys(kv as Bucket, prefix), 'list');
    },
    peek(key) {
      const snap = known.get(key);
      return snap?.value === undefined
        ? undefined
        : { key, value: structuredClone(snap.value), revision: snap.revision };
    },
    async create(key, value) {
      // kv.create fails on a live key and succeeds over a tombstone: no read needed.
      try {
        return await write(key, value, 0);
      } catch (err) {
        if (isConflict(err)) throw new SysboxError('already-exists', `${key} already exists`, { cause: err });
        throw asUnavailable(err);
      }
    },
    async mutate(key, mutate) {
      return (await this.change(key, mutate)).value;
    },
    async change(key, mutate) {
      for (let attempt = 0; ; attempt++) {
        const remembered = attempt === 0 ? known.get(key) : undefined;
        const { value: stored, revision } = remembered ?? (await read(key, 'update'));
        // Callers may edit what they are given; the remembered snapshot must stay as stored.
        const current = stored === undefined ? undefined : structuredClone(stored);
        let next: Mutation<T>;
        try {
          next = await mutate(current);
        } catch (err) {
          if (remembered) continue;
          throw err;
        }
        if (next === undefined) {
          if (remembered) continue;
          return { value: current, wrote: false, revision };
        }
        try {
          if (next === REMOVE) {
            if (current === undefined) {
              if (remembered) continue;
              return { value: undefined, wrote: false, revision };
            }
            await remove(key, revision);
            return { value: undefined, wrote: true, revision: 0 };
          }
          const rev = await write(key, next, revision);
          return { value: next, wrote: true, revision: rev };
        } catch (err) {
          known.delete(key);
          if (!isConflict(err) || attempt >= maxRetries) throw asUnavailable(err);
          metrics?.kvRetry(bucket, 'update', 'conflict');
          if (!remembered) await jitter(attempt);
        }
      }
    },
    async delete(key, opts = {}) {
      known.delete(key);
      if (opts.revision === undefined) {
        // Whatever revision the key is at: removed at the one read, read again if it moved.
        await this.change(key, (current) => (current === undefined ? undefined : REMOVE));
        return;
      }
      try {
        await remove(key, opts.revision);
      } catch (err) {
        if (isConflict(err))
          throw new SysboxError('failed-precondition', `${key} changed since revision ${opts.revision}`, {
            cause: err,
          });
        throw asUnavailable(err);
      }
    },
  };
  return metrics ? timedStore(store, metrics, bucket) : store;
}

/**
 * Each operation timed as its caller sees it (retries included), its failure counted by code;
 * mutate is change (through `this`), timed once.
 */
function timedStore<T>(store: KvStateStore<T>, metrics: AppMetrics, bucket: string): KvStateStore<T> {
  const timed = async <R>(op: KvOp, fn: () => Promise<R>): Promise<R> => {
    const finish = metrics.kvOp(bucket, op);
    try {
      const r = await fn();
      finish('ok');
      return r;
    } catch (err) {
      finish(err instanceof SysboxError ? err.code : 'internal');
      throw err;
    }
  };
  return {
    ...store,
    get: (key) => timed('get', () => store.get(key)),
    list: () => timed('list', () => store.list()),
    keys: () => timed('list', () => store.keys()),
    create: (key, value) => timed('create', () => store.create(key, value)),
    change: (key, mutate) => timed('update', () => store.change(key, mutate)),
    delete: (key, o) => timed('delete', () => store.delete(key, o)),
  };
}

function jitter(attempt: number): Promise<void> {
  const ms = Math.min(50, 1 + Math.random() * 2 ** Math.min(attempt, 5));
  return new Promise((r) => setTimeout(r, ms));
}
