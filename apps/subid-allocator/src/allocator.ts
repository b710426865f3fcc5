/**
 * The subordinate id allocator (upstream intf.SubidAlloc), shared or exclusive.
 *
 * The node's whole allocation table is ONE KV entry, written with compare-and-set. A write is
 * atomic, so an allocation either is in the table or is not: a replica killed at any moment
 * loses none and leaks none, and two replicas can never both win a write made from the same
 * revision, so they never hand out overlapping blocks. Inside one replica, requests queue and
 * each CAS write carries every request that arrived while the previous write was in flight:
 * contention on the key is between replicas only, and a burst costs a few writes, not one each.
 */
import {
  ContainerId,
  Id,
  MAX_SUBID_SIZE,
  SUBID_BLOCK,
  SysboxError,
  Timestamp,
  type SubidAlloc,
  type SubidAllocReply,
  type SubidListReply,
} from '@sysbox-mgr-ts/contracts';
import type { StateStore } from '@sysbox-mgr-ts/kv-state';
import { z } from 'zod';

export type SubidMode = 'shared' | 'exclusive';

/** uid and gid ranges start at the same id (the host set-up makes them match). */
export const AllocationRecord = z.object({
  id: ContainerId,
  start: Id,
  size: z.number().int().min(1).max(MAX_SUBID_SIZE),
  allocatedAt: Timestamp,
});
export type AllocationRecord = z.infer<typeof AllocationRecord>;

/** An array, not an object keyed by id: ids such as `__proto__` are valid container ids. */
export const AllocationTable = z.object({ allocations: z.array(AllocationRecord) });
export type AllocationTable = z.infer<typeof AllocationTable>;

/** The one key of the node's table in the store. */
export const TABLE_KEY = 'table';

export interface SubidAllocOptions {
  mode: SubidMode;
  pool: { start: number; size: number };
  store: StateStore<AllocationTable>;
  now?: () => Date;
  /**
   * Largest encoded table, in bytes: a KV value must fit in one NATS message (max_payload,
   * 1 MiB by default). An allocation with a 64-character id takes about 146 bytes.
   */
  maxTableBytes?: number;
}

type Op = { kind: 'alloc'; id: string; size: number } | { kind: 'free'; id: string };
/** `changed`: whether the operation altered the table (a repeated alloc does not). */
type OpResult = { ok: true; changed: boolean; record?: AllocationRecord } | { ok: false; error: SysboxError };
type Pending = { op: Op; resolve: (r: OpResult) => void; reject: (err: unknown) => void };

export function createSubidAlloc(opts: SubidAllocOptions): SubidAlloc {
  const { mode, pool, store } = opts;
  const now = opts.now ?? (() => new Date());
  const maxTableBytes = opts.maxTableBytes ?? 900 * 1024;
  if (pool.size < SUBID_BLOCK || pool.size % SUBID_BLOCK !== 0 || pool.start + pool.size - 1 > 2 ** 32 - 2) {
    throw new SysboxError('invalid-request', `pool ${pool.start}+${pool.size} must be a multiple of ${SUBID_BLOCK} ids within 32 bits`);
  }

  const checkSize = (size: number): void => {
    if (size === 0 || size > MAX_SUBID_SIZE) {
      throw new SysboxError('invalid-size', `size ${size} is outside 1..${MAX_SUBID_SIZE}`);
    }
    if (size > pool.size) throw new SysboxError('invalid-size', `size ${size} exceeds the pool of ${pool.size} ids`);
    if (mode === 'exclusive' && size % SUBID_BLOCK !== 0) {
      throw new SysboxError('invalid-size', `exclusive mode allocates multiples of ${SUBID_BLOCK} ids, not ${size}`);
    }
  };

  /** First fit over block-aligned offsets of the pool, skipping every recorded range. */
  const firstFit = (taken: readonly AllocationRecord[], size: number): number | undefined => {
    const poolEnd = pool.start + pool.size;
    let cursor = pool.start;
    for (const r of [...taken].sort((a, b) => a.start - b.start)) {
      if (r.start + r.size <= cursor) continue;
      if (r.start >= cursor + size) break;
      cursor = pool.start + Math.ceil((r.start + r.size - pool.start) / SUBID_BLOCK) * SUBID_BLOCK;
    }
    return cursor + size <= poolEnd ? cursor : undefined;
  };

  /** Applies one operation to the table in place; a failed one leaves it untouched. */
  const apply = (table: AllocationTable, op: Op, bytes: { n: number }): OpResult => {
    const i = table.allocations.findIndex((r) => r.id === op.id);
    const existing = i < 0 ? undefined : table.allocations[i];
    if (op.kind === 'free') {
      if (!existing) return { ok: false, error: new SysboxError('not-found', `container ${op.id} holds no subid range`) };
      table.allocations.splice(i, 1);
      bytes.n -= encodedSize(existing);
      return { ok: true, changed: true };
    }
    if (existing) {
      if (existing.size === op.size) return { ok: true, changed: false, record: existing };
      return {
        ok: false,
        error: new SysboxError('invalid-size', `container ${op.id} already holds ${existing.size} ids at ${existing.start}; free it before asking for ${op.size}`),
      };
    }
    const start = mode === 'shared' ? pool.start : firstFit(table.allocations, op.size);
    if (start === undefined) {
      return { ok: false, error: new SysboxError('exhausted', `no free range of ${op.size} ids left in the pool ${pool.start}+${pool.size}`) };
    }
    const record: AllocationRecord = { id: op.id, start, size: op.size, allocatedAt: now().toISOString() };
    if (bytes.n + encodedSize(record) > maxTableBytes) {
      return { ok: false, error: new SysboxError('exhausted', `the allocation table is full (${table.allocations.length} allocations)`) };
    }
    table.allocations.push(record);
    bytes.n += encodedSize(record);
    return { ok: true, changed: true, record };
  };

  const queue: Pending[] = [];
  let writing = false;

  /** Drains the queue batch by batch: one CAS write per batch, retried as a whole on conflict. */
  const drain = async (): Promise<void> => {
    writing = true;
    while (queue.length > 0) {
      const batch = queue.splice(0, queue.length);
      let results: OpResult[] = [];
      try {
        await store.mutate(TABLE_KEY, (current) => {
          const table: AllocationTable = { allocations: [...(current?.allocations ?? [])] };
          const bytes = { n: JSON.stringify(table).length };
          results = batch.map((p) => apply(table, p.op, bytes));
          return results.some((r) => r.ok && r.changed) ? table : undefined;
        });
        batch.forEach((p, k) => p.resolve(results[k]!));
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    writing = false;
  };

  const submit = async (op: Op): Promise<OpResult> => {
    const result = new Promise<OpResult>((resolve, reject) => queue.push({ op, resolve, reject }));
    if (!writing) void drain();
    return result;
  };

  const replyOf = (r: AllocationRecord): SubidAllocReply => ({ uid: r.start, gid: r.start, size: r.size });

  return {
    async alloc(id, size) {
      checkSize(size);
      const r = await submit({ kind: 'alloc', id, size });
      if (!r.ok) throw r.error;
      return replyOf(r.record!);
    },
    async free(id) {
      const r = await submit({ kind: 'free', id });
      if (!r.ok) throw r.error;
    },
    async list(): Promise<SubidListReply> {
      const table = (await store.get(TABLE_KEY))?.value ?? { allocations: [] };
      const allocations = [...table.allocations]
        .sort((a, b) => a.start - b.start || a.id.localeCompare(b.id))
        .map((r) => ({ id: r.id, ...replyOf(r), allocatedAt: r.allocatedAt }));
      return { mode, pool: { uid: pool.start, gid: pool.start, size: pool.size }, allocations };
    },
  };
}

function encodedSize(r: AllocationRecord): number {
  return JSON.stringify(r).length + 1;
}
