/**
 * The container table: records in a StateStore (JetStream KV in production), written only when
 * the lifecycle state is still the one the operation started from, and one operation at a time
 * per container inside this process (KV compare-and-set covers other gateways).
 *
 * Reads come from what this gateway last read or wrote, when it has: a container's calls all
 * reach the gateway of its socket, which writes its record, so memory is current and each call
 * saves a KV round trip. What another process may do meanwhile is caught on write: the removal
 * watch or orphan collector of another gateway deleting a record or stopping a container fails
 * the compare-and-set, and the fresh read then answers not-found or the new state. A restarted or
 * standby gateway starts with no memory and reads KV.
 *
 * Service calls never run inside a store's mutate callback (a retried callback would repeat
 * them): an operation reads its record, calls the services, then saves the outcome.
 *
 * A subid range is the one outcome not written at once: the allocator keeps it under the
 * container's id before it answers, and answers the same range for the same id, so it is held
 * here, seen by every read, and carried by the record's next write (subid-reconcile.ts gives a
 * restarted gateway back what a lost one held).
 *
 * The removal watch follows the table: a record saved stopped is watched at its rmWatchPath, one
 * saved out of stopped or removed is not (`onWatchChange`, which the gateway points at the watcher).
 */
import { SysboxError, type SubidRange } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import { createKeyedLock } from '@sysbox-mgr-ts/service-kit';
import { withSubidRange, type ContainerRecord, type ContainerState } from './record.js';

export interface ContainerTable {
  get(id: string): Promise<ContainerRecord | undefined>;
  /** The record as this gateway last read or wrote it, without a request; undefined if it has not seen it. */
  remembered(id: string): ContainerRecord | undefined;
  /** The record, or `not-found` with this message. */
  mustGet(id: string, notFound: string): Promise<ContainerRecord>;
  /** A new record; `already-exists` when the id has one. */
  create(rec: ContainerRecord): Promise<void>;
  /** Writes the record, unless it is gone or its lifecycle state is no longer `expectState`. */
  save(rec: ContainerRecord, expectState?: ContainerState): Promise<void>;
  /**
   * Holds the range the allocator answered for `id` (see above): reads show it in the record and
   * the record's next save writes it. SubidAlloc makes no KV write of its own.
   */
  holdSubidRange(id: string, range: SubidRange): void;
  /** Writes what is about to be asked of a service before asking (see ContainerRecord.requested). */
  recordIntent(rec: ContainerRecord, mark: (requested: ContainerRecord['requested']) => void): Promise<void>;
  /** Deletes the record if it is (still) stopped. */
  removeIfStopped(id: string): Promise<void>;
  list(): Promise<ContainerRecord[]>;
  /** Runs `fn` after every earlier operation on `id` settled, whether they failed or not. */
  serialized<T>(id: string, fn: () => Promise<T>): Promise<T>;
  /** The clock, as records spell times. */
  now(): string;
  /** Tells `listener` each watch a write starts (the stopped record's rmWatchPath) or ends (undefined). */
  onWatchChange(listener: (id: string, path: string | undefined) => void): void;
}

export function createContainerTable(
  store: KvStateStore<ContainerRecord>,
  clock: () => Date,
): ContainerTable {
  const now = (): string => clock().toISOString();
  /** Ranges answered by the allocator that no write has carried yet, by container id. */
  const heldRanges = new Map<string, SubidRange>();
  const withHeld = (rec: ContainerRecord | undefined): ContainerRecord | undefined => {
    const range = rec && heldRanges.get(rec.id);
    return range ? withSubidRange(rec, range) : rec;
  };
  const listeners: ((id: string, path: string | undefined) => void)[] = [];
  const tell = (id: string, path: string | undefined): void => listeners.forEach((l) => l(id, path));
  const table: ContainerTable = {
    now,
    onWatchChange: (listener) => void listeners.push(listener),
    serialized: createKeyedLock(),
    get: async (id) => withHeld((store.peek(id) ?? (await store.get(id)))?.value),
    remembered: (id) => withHeld(store.peek(id)?.value),
    async mustGet(id, notFound) {
      const rec = await table.get(id);
      if (!rec) throw new SysboxError('not-found', notFound);
      return rec;
    },
    async create(rec) {
      await store.create(rec.id, rec);
      // A range held for an earlier container of this id went with that container's removal.
      heldRanges.delete(rec.id);
    },
    async save(rec, expectState = rec.state) {
      await store.mutate(rec.id, (cur) => {
        if (!cur) throw new SysboxError('not-found', `container ${rec.id} was removed while being changed`);
        if (cur.state !== expectState) {
          throw new SysboxError(
            'failed-precondition',
            `container ${rec.id} changed state to ${cur.state} meanwhile`,
          );
        }
        return { ...rec, updatedAt: now() };
      });
      if (rec.subidAllocated) heldRanges.delete(rec.id);
      if (rec.state === 'stopped') tell(rec.id, rec.rmWatchPath);
      else if (expectState === 'stopped') tell(rec.id, undefined);
    },
    holdSubidRange(id, range) {
      heldRanges.set(id, range);
    },
    async recordIntent(rec, mark) {
      mark(rec.requested);
      await table.save(rec);
    },
    async removeIfStopped(id) {
      const after = await store.mutate(id, (cur) => (cur?.state === 'stopped' ? REMOVE : undefined));
      if (after === undefined) {
        heldRanges.delete(id);
        tell(id, undefined);
      }
    },
    list: async () => (await store.list()).map((v) => withHeld(v.value)!),
  };
  return table;
}
