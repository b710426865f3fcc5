/** The store's interface: what every state store (JetStream, or the in-memory one for tests) offers. */
import type { z } from 'zod';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';

export interface Snapshot<T> {
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
