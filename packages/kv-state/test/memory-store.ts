/**
 * An in-memory KvStateStore for unit tests that behaves like the JetStream one: values are copied
 * in and out (nobody holds the stored object), every write gets a new revision from one counter,
 * a delete leaves nothing (keys() lists live keys only), create refuses a live key, and a delete
 * with a revision is compare-and-set.
 */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type Change, type KvStateStore, type Mutation, type Versioned } from '../src/types.js';

interface Slot<T> {
  value: T | undefined;
  revision: number;
}

export interface MemoryStoreOptions<T> {
  /** Entries the store starts with. */
  initial?: Record<string, T>;
  /** Called on every write (create, update, delete): for tests that count writes. */
  onWrite?: (key: string) => void;
}

export interface MemoryStore<T> extends KvStateStore<T> {
  /** The live values by key, as copies: for assertions. */
  snapshot(): Map<string, T>;
}

export function createMemoryStore<T>(opts: MemoryStoreOptions<T> = {}): MemoryStore<T> {
  const slots = new Map<string, Slot<T>>();
  let lastRevision = 0;
  for (const [key, value] of Object.entries(opts.initial ?? {}))
    slots.set(key, { value: structuredClone(value), revision: ++lastRevision });
  const copy = (v: T | undefined): T | undefined => (v === undefined ? undefined : structuredClone(v));
  const put = (key: string, value: T | undefined): number => {
    opts.onWrite?.(key);
    slots.set(key, { value: copy(value), revision: ++lastRevision });
    return lastRevision;
  };
  const remove = (key: string): void => {
    opts.onWrite?.(key);
    slots.delete(key);
  };

  const store: MemoryStore<T> = {
    snapshot() {
      return new Map(
        [...slots].flatMap(([key, slot]) =>
          slot.value === undefined ? [] : [[key, copy(slot.value)!] as const],
        ),
      );
    },
    async get(key) {
      const slot = slots.get(key);
      return slot?.value === undefined
        ? undefined
        : { key, value: copy(slot.value)!, revision: slot.revision };
    },
    async list() {
      const out: Versioned<T>[] = [];
      for (const key of [...slots.keys()].sort()) {
        const v = await store.get(key);
        if (v) out.push(v);
      }
      return out;
    },
    async keys() {
      return [...slots.keys()].sort();
    },
    // One process's memory of the entry: here always the stored one.
    peek(key) {
      const slot = slots.get(key);
      return slot?.value === undefined
        ? undefined
        : { key, value: copy(slot.value)!, revision: slot.revision };
    },
    async create(key, value) {
      if (slots.get(key)?.value !== undefined)
        throw new SysboxError('already-exists', `${key} already exists`);
      return put(key, value);
    },
    async mutate(key, fn) {
      return (await store.change(key, fn)).value;
    },
    async change(
      key,
      fn: (current: T | undefined) => Mutation<T> | Promise<Mutation<T>>,
    ): Promise<Change<T>> {
      const before = slots.get(key);
      const next = await fn(copy(before?.value));
      // Another write while fn ran would fail the CAS write of the real store: apply fn again.
      if (slots.get(key) !== before) return store.change(key, fn);
      if (next === undefined)
        return { value: copy(before?.value), wrote: false, revision: before?.revision ?? 0 };
      if (next === REMOVE) {
        if (before?.value === undefined)
          return { value: undefined, wrote: false, revision: before?.revision ?? 0 };
        remove(key);
        return { value: undefined, wrote: true, revision: 0 };
      }
      return { value: copy(next), wrote: true, revision: put(key, next) };
    },
    async delete(key, deleteOpts = {}) {
      const slot = slots.get(key);
      if (
        deleteOpts.revision !== undefined &&
        slot?.value !== undefined &&
        slot.revision !== deleteOpts.revision
      ) {
        throw new SysboxError('failed-precondition', `${key} changed since revision ${deleteOpts.revision}`);
      }
      if (slot?.value !== undefined) remove(key);
    },
  };
  return store;
}
