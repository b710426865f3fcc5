/**
 * Durable service state in JetStream KV: one bucket per service, keys `<node>.<container id>`,
 * every write a compare-and-set on the entry's revision so replicas never overwrite each other.
 *
 * A delete leaves nothing behind: it removes the key's one message (history 1) by its sequence
 * (STREAM.MSG.DELETE), which succeeds only while that message is still the key's value, so it is
 * a compare-and-set too. No delete marker stays in the stream: the bucket's messages and bytes,
 * its subject index and every list are bounded by the live records, not by all that ever existed.
 * Markers a kv.delete() left (state written before this, or by the NATS CLI) are removed where a
 * read or a list meets them.
 */
import { Kvm, type Bucket, type KV, type KvEntry } from '@nats-io/kv';
import { AckPolicy, DeliverPolicy, JetStreamApiError, jetstream } from '@nats-io/jetstream';
import { nanos, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import type { AppMetrics, KvOp } from '@sysbox-mgr-ts/metrics';
import { isTransient, retryTransient } from '@sysbox-mgr-ts/nats-retry';
import type { z } from 'zod';

export interface BucketOptions {
  /** 1 on the embedded default, 3 on a cluster. */
  replicas?: number;
  description?: string;
  /** The bucket's size limit: past it, writes fail with `exhausted` instead of filling the disk. */
  maxBytes?: number;
  /** Largest value one key may hold. */
  maxValueSize?: number;
  /** How long to wait out a failover (see nats-retry) before giving up. */
  retryWindowMs?: number;
  /** Exports the bucket's bytes, limit and fill on scrape (its stream info). */
  metrics?: AppMetrics;
}

/**
 * Long enough for a JetStream leader election after a lost server (about 5 s measured on an idle
 * machine, more on a loaded one), short enough to answer within the gateway's 10 s call bound
 * most of the time.
 */
export const DEFAULT_RETRY_WINDOW_MS = 15_000;

/**
 * One JetStream request's wait. During an election a read (`STREAM.MSG.GET`) gets no answer until
 * there is a new leader, so a shorter wait reaches the new leader sooner. 1 s was tried: the
 * cluster's failover figures did not clearly move, and the one full bench run with it saw a
 * service's list time out on a heavily loaded host (not reproduced; a request slower than the wait
 * fails every attempt). 2 s keeps that headroom.
 */
const JS_REQUEST_TIMEOUT_MS = 2000;
/** Creating a replicated stream starts a raft group: slower than any other request. */
const JS_CREATE_TIMEOUT_MS = 5000;

/**
 * Default bucket limits: far above what a node's records need (about 300,000 records of 200
 * bytes), far below a disk. JetStream reserves max_bytes once per replica against the account
 * (2 GiB): five R3 buckets of 64 MiB take 960 MiB.
 */
export const DEFAULT_BUCKET_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_VALUE_SIZE = 1024 * 1024;

/**
 * Binds the bucket, creating it on first use. Creating is idempotent for an identical config;
 * a bucket an operator made with other settings (say, more replicas) is bound as it is.
 *
 * Reads go to the stream leader (no direct get): with direct get, an R3 bucket answers from any
 * replica, and a follower that lags misses the caller's own last write.
 */
export async function openBucket(nc: NatsConnection, name: string, opts: BucketOptions = {}): Promise<KV> {
  // A daemon that starts during an election waits for JetStream instead of failing its start.
  const kv = await retryTransient(() => openBucketOnce(nc, name, opts), {
    idempotent: true,
    deadline: Date.now() + (opts.retryWindowMs ?? DEFAULT_RETRY_WINDOW_MS),
  });
  opts.metrics?.bucket(name, async () => {
    const s = await kv.status();
    return { bytes: s.size, maxBytes: s.max_bytes, messages: s.values };
  });
  return kv;
}

async function openBucketOnce(nc: NatsConnection, name: string, opts: BucketOptions): Promise<KV> {
  const kvm = new Kvm(jetstream(nc, { timeout: JS_REQUEST_TIMEOUT_MS }));
  try {
    await new Kvm(jetstream(nc, { timeout: JS_CREATE_TIMEOUT_MS })).create(name, {
      replicas: opts.replicas ?? 1,
      history: 1,
      description: opts.description,
      max_bytes: opts.maxBytes ?? DEFAULT_BUCKET_MAX_BYTES,
      maxValueSize: opts.maxValueSize ?? DEFAULT_MAX_VALUE_SIZE,
      allow_direct: false,
    });
  } catch (err) {
    const kv = await kvm.open(name);
    await kv.status().catch(() => {
      throw asUnavailable(err);
    });
    return kv;
  }
  // Bound to the context with the short wait, for every operation after the create.
  return kvm.open(name);
}

/** KV key tokens allow [-_a-zA-Z0-9]; everything else (runc ids may hold `.` and `+`) is =XX escaped. */
export function encodeKeyToken(id: string): string {
  return id.replace(/[^-_a-zA-Z0-9]/g, (ch) => `=${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function decodeKeyToken(token: string): string {
  return token.replace(/=([0-9a-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

interface Snapshot<T> {
  value: T | undefined;
  revision: number;
}

export interface Versioned<T> {
  key: string;
  value: T;
  revision: number;
}

/** What a mutation returns: the new value, `undefined` for "no change", or REMOVE to delete the entry. */
export const REMOVE = Symbol('remove');
export type Mutation<T> = T | undefined | typeof REMOVE;

export interface StateStore<T> {
  get(key: string): Promise<Versioned<T> | undefined>;
  list(): Promise<Versioned<T>[]>;
  /** Creates the entry; `already-exists` when it is there. */
  create(key: string, value: T): Promise<number>;
  /**
   * Reads, applies `mutate`, writes with CAS; on a conflict reads again and retries.
   * Returns the stored value after the write (undefined when absent).
   */
  mutate(
    key: string,
    mutate: (current: T | undefined) => Mutation<T> | Promise<Mutation<T>>,
  ): Promise<T | undefined>;
  /**
   * Deletes the entry; with `revision`, only if it is still at that revision (compare-and-set:
   * `failed-precondition` when someone wrote since). Deleting an absent entry is not an error.
   */
  delete(key: string, opts?: { revision?: number }): Promise<void>;
}

/** What `change` did: the stored value after it, whether it wrote, and the entry's revision. */
export interface Change<T> {
  value: T | undefined;
  wrote: boolean;
  /** The revision of the write, or of what was read when nothing was written (0: never written, or deleted now). */
  revision: number;
}

/** What a KV-backed store offers beyond StateStore: keys without values, a cached read. */
export interface KvStateStore<T> extends StateStore<T> {
  /**
   * The keys under this store's prefix, sorted, from one request: no value is read. A delete
   * removes its key's subject, so only live keys are listed, but one deleted while this ran may
   * still be: get() each one you use.
   */
  keys(): Promise<string[]>;
  /**
   * The entry as this store last read or wrote it, without a request; undefined when it has not
   * seen the key live. Stale when another process wrote since: for a caller that is the key's only
   * writer (the gateway of a node for its containers' records), whose writes still compare-and-set.
   */
  peek(key: string): Versioned<T> | undefined;
  /** mutate(), telling whether it wrote and at which revision (no flag set from inside the callback). */
  change(
    key: string,
    mutate: (current: T | undefined) => Mutation<T> | Promise<Mutation<T>>,
  ): Promise<Change<T>>;
}

export interface StoreOptions<S extends z.ZodType> {
  /** First key token: the node this daemon serves. */
  node: string;
  /** Optional second token, e.g. a volume kind or a record type. */
  namespace?: string;
  schema: S;
  maxRetries?: number;
  /** How long one operation waits out a failover before it fails with `unavailable`. */
  retryWindowMs?: number;
  /** Records each operation's latency, errors and retries. */
  metrics?: AppMetrics;
}

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
  /** A transient failure waited out, counted against the operation that met it. */
  const onRetry = (op: KvOp) => (metrics ? () => metrics.kvRetry(bucket, op, 'transient') : undefined);
  /** Times one store operation, as the caller sees it (retries included), and counts its failure. */
  const timed = async <R>(op: KvOp, fn: () => Promise<R>): Promise<R> => {
    if (!metrics) return fn();
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
  /** Reads may run twice; a write is retried only when it surely did not land (see nats-retry). */
  const kvRead = <R>(fn: () => Promise<R>, op: KvOp): Promise<R> =>
    kvCall(() =>
      retryTransient(fn, { idempotent: true, deadline: Date.now() + retryWindowMs, onRetry: onRetry(op) }),
    );
  const fullKey = (key: string): string => prefix + encodeKeyToken(key);

  const decode = (entry: KvEntry): T => {
    const parsed = opts.schema.safeParse(entry.json());
    if (!parsed.success) {
      throw new SysboxError(
        'internal',
        `state entry ${entry.key} does not match its schema: ${parsed.error.message}`,
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
      const entry = await kvRead(() => kv.get(fullKey(key)), op);
      if (entry && entry.operation !== 'PUT') await sweepMarker(kv as Bucket, entry.revision);
      const snap =
        !entry || entry.operation !== 'PUT'
          ? { value: undefined, revision: 0 }
          : { value: decode(entry), revision: entry.revision };
      if (snap.value === undefined || !deletedSince(key, snap.revision)) known.set(key, snap);
      return snap;
    });

  /** `revision` 0 creates (the key must be absent); otherwise updates the key if still at `revision`. */
  const write = async (key: string, value: T, revision: number): Promise<number> => {
    const data = JSON.stringify(value);
    const attempt = (): Promise<number> =>
      revision === 0 ? kv.create(fullKey(key), data) : kv.update(fullKey(key), data, revision);
    try {
      const rev = await writeSurely(key, revision === 0 ? 'create' : 'update', attempt, (entry) => {
        const live = entry !== null && entry.operation === 'PUT';
        if (live && entry.string() === data && entry.revision > revision) return 'landed';
        if (revision === 0) return live ? 'conflict' : 'not-landed';
        return entry?.revision === revision ? 'not-landed' : 'conflict';
      });
      known.set(key, { value, revision: rev });
      return rev;
    } catch (err) {
      known.delete(key);
      throw err;
    }
  };

  /**
   * Runs a CAS write, waiting out a failover. A write whose answer was lost (a time-out, a
   * connection lost while it was in flight) may or may not have landed: the key is read back from
   * the leader and `judge` decides. Landed: done. Not landed (the key is as it was): write again.
   * Anything else: someone else wrote, a conflict the caller handles as any other.
   */
  const writeSurely = async (
    key: string,
    op: KvOp,
    attempt: () => Promise<number | boolean>,
    judge: (entry: KvEntry | null) => 'landed' | 'not-landed' | 'conflict',
  ): Promise<number> => {
    const deadline = Date.now() + retryWindowMs;
    for (;;) {
      try {
        const r = await retryTransient(attempt, { idempotent: false, deadline, onRetry: onRetry(op) });
        return typeof r === 'number' ? r : 0;
      } catch (err) {
        const lostAnswer = isTransient(err, { idempotent: true }) && !isTransient(err, { idempotent: false });
        if (!lostAnswer || Date.now() >= deadline) throw err;
        metrics?.kvRetry(bucket, op, 'transient');
        const entry = await kvRead(() => kv.get(fullKey(key)), op);
        const verdict = judge(entry);
        if (verdict === 'landed') return entry!.revision;
        if (verdict === 'conflict') throw new LostWriteConflict(key, err);
      }
    }
  };

  /**
   * Deletes the entry if it is still at `revision`: removes the message at that stream sequence,
   * which exists only while it is the key's value (history 1: a newer write replaces it). Nothing
   * is left in the stream; a create after it starts from revision 0 as on a key never written.
   */
  const casDelete = async (key: string, revision: number): Promise<void> => {
    await writeSurely(
      key,
      'delete',
      () => removeMessage(kv as Bucket, revision),
      (entry) => {
        if (entry?.revision === revision) return 'not-landed';
        return entry === null || entry.operation !== 'PUT' ? 'landed' : 'conflict';
      },
    );
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
          const parsed = opts.schema.safeParse(m.json());
          if (!parsed.success)
            throw new SysboxError(
              'internal',
              `state entry ${key} does not match its schema: ${parsed.error.message}`,
            );
          // A list runs beside this store's own writes: one that landed after the list's pass read
          // the key is newer than what the pass saw, and peek() must not go back to the older.
          // Nor may it bring back a key this store deleted after the pass read it.
          if ((known.get(key)?.revision ?? 0) <= m.revision && !deletedSince(key, m.revision))
            known.set(key, { value: parsed.data as T, revision: m.revision });
          out.push({ key, value: structuredClone(parsed.data as T), revision: m.revision });
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
            await casDelete(key, revision);
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
        await casDelete(key, opts.revision);
      } catch (err) {
        if (isConflict(err))
          throw new SysboxError('failed-precondition', `${key} changed since revision ${opts.revision}`, {
            cause: err,
          });
        throw asUnavailable(err);
      }
    },
  };
  if (!metrics) return store;
  // Each operation timed as its caller sees it; mutate is change (through `this`), timed once.
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

/**
 * The keys under `prefix`, from the stream's subject index (STREAM.INFO with subjects_filter):
 * one request, no consumer. Not kv.keys(): with @nats-io/kv 3.4 on nats-server 2.9, a keys()
 * that runs while another writer updates a key can wait forever (its ordered consumer never
 * sees pending 0), and replicas of a service list while others write.
 */
async function listKeys(kv: Bucket, prefix: string): Promise<string[]> {
  const subjectPrefix = `${kv.prefix}.${prefix}`;
  const info = await kvCall(() => kv.jsm.streams.info(kv.stream, { subjects_filter: `${subjectPrefix}*` }));
  return Object.keys(info.state.subjects ?? {})
    .map((subject) => decodeKeyToken(subject.slice(subjectPrefix.length)))
    .sort();
}

/**
 * Removes the message at `seq`: a key's value, or a delete marker. `no_erase`: the bytes are
 * dropped from the index, not overwritten on disk (the file is compacted as blocks empty).
 * A sequence that holds no message any more answers a conflict (see isConflict).
 */
async function removeMessage(kv: Bucket, seq: number): Promise<boolean> {
  return kv.jsm.streams.deleteMessage(kv.stream, seq, false);
}

/**
 * Removes a delete marker that kv.delete() left (before deletes removed their key's message, or
 * from a hand-run `nats kv del`): the marker's own sequence, so a value written since is kept.
 * Best effort: the next read or list that meets it tries again.
 */
async function sweepMarker(kv: Bucket, seq: number): Promise<void> {
  await removeMessage(kv, seq).catch(() => undefined);
}

/** A write whose answer was lost, read back and found overwritten by someone else. */
class LostWriteConflict extends Error {
  constructor(key: string, cause: unknown) {
    super(`the write of ${key} lost its answer and another writer changed the key meanwhile`, { cause });
  }
}

/**
 * The last message of every key under `prefix`, mostly in one pass: an ephemeral pull consumer
 * that delivers the last message per subject, read up to the count it had pending when it was
 * made, then deleted. A get per key cost one round trip each (2,000 for a busy node's container
 * table). With writers at work the consumer also delivers newer messages in stream order and may
 * then stop before an older key: the newest message per key wins, and keys the subject index
 * lists but the pass missed are read one by one. Reads the stream leader, like a get.
 */
interface LastMessage {
  subject: string;
  revision: number;
  /** A delete or purge marker: the key has no value. */
  deleted: boolean;
  json(): unknown;
}

function isDeleteMarker(headers: MsgHdrs | undefined): boolean {
  const op = headers?.get('KV-Operation');
  return op === 'DEL' || op === 'PURGE';
}

async function lastMessages(kv: Bucket, prefix: string): Promise<LastMessage[]> {
  const info = await kv.jsm.consumers.add(kv.stream, {
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.LastPerSubject,
    filter_subject: `${kv.prefix}.${prefix}*`,
    mem_storage: true,
    num_replicas: 1,
    // Removed by the server if this process dies before deleting it.
    inactive_threshold: nanos(30_000),
  });
  const newest = new Map<string, LastMessage>();
  try {
    if (info.num_pending > 0) {
      const consumer = await kv.js.consumers.get(kv.stream, info.name);
      const messages = await consumer.fetch({ max_messages: info.num_pending, expires: 5000 });
      let n = 0;
      for await (const m of messages) {
        if ((newest.get(m.subject)?.revision ?? 0) < m.seq) {
          newest.set(m.subject, {
            subject: m.subject,
            revision: m.seq,
            deleted: isDeleteMarker(m.headers),
            json: () => m.json(),
          });
        }
        if (++n >= info.num_pending) break;
      }
    }
  } finally {
    await kv.jsm.consumers.delete(kv.stream, info.name).catch(() => undefined);
  }
  const subjectPrefix = `${kv.prefix}.${prefix}`;
  for (const key of await listKeys(kv, prefix)) {
    const subject = subjectPrefix + encodeKeyToken(key);
    if (newest.has(subject)) continue;
    const m = await kv.jsm.streams.getMessage(kv.stream, { last_by_subj: subject }).catch(() => undefined);
    if (m)
      newest.set(subject, {
        subject,
        revision: m.seq,
        deleted: isDeleteMarker(m.header),
        json: () => m.json(),
      });
  }
  return [...newest.values()];
}

function isConflict(err: unknown): boolean {
  return (
    err instanceof LostWriteConflict ||
    (err instanceof JetStreamApiError &&
      (err.code === 10071 /* wrong last sequence */ ||
        err.code === 10164 /* wrong last sequence unknown */ ||
        // STREAM.MSG.DELETE of a sequence that holds no message: the key moved on, or is gone.
        err.code === 10043 /* sequence not found */ ||
        (err.code === 10057 && /no message found|EOF/i.test(err.message))))
  );
}

/** JetStream's refusals of a write that does not fit: the bucket's or the account's limits. */
const FULL =
  /maximum (bytes|messages|message size)|message size exceeds|insufficient resources|storage limit|resource limits exceeded/i;

function asUnavailable(err: unknown): SysboxError {
  if (err instanceof SysboxError) return err;
  if (FULL.test((err as Error).message)) {
    return new SysboxError('exhausted', `state store full: ${(err as Error).message}`, { cause: err });
  }
  return new SysboxError('unavailable', `state store: ${(err as Error).message}`, { cause: err });
}

async function kvCall<R>(fn: () => Promise<R>): Promise<R> {
  try {
    return await fn();
  } catch (err) {
    throw asUnavailable(err);
  }
}

function jitter(attempt: number): Promise<void> {
  const ms = Math.min(50, 1 + Math.random() * 2 ** Math.min(attempt, 5));
  return new Promise((r) => setTimeout(r, ms));
}

export { BOOT_ID_FILE, bootOf, readBootId, type BootOf } from './boot.js';
