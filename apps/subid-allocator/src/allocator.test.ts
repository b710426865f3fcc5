import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import { describe, expect, it } from 'vitest';
import { TABLE_KEY, createSubidAlloc, type AllocationTable, type SubidMode } from './allocator.js';

const B = 65536;
const START = 165536;

/** A store kept in memory, with the kv-state contract (structured copies, so no aliasing). */
function memoryStore(): StateStore<AllocationTable> & { writes: number } {
  const data = new Map<string, AllocationTable>();
  const copy = (v: AllocationTable | undefined) => (v === undefined ? undefined : structuredClone(v));
  return {
    writes: 0,
    async get(key) {
      const value = copy(data.get(key));
      return value && { key, value, revision: 1 };
    },
    async list() {
      return [...data].map(([key, value]) => ({ key, value: copy(value)!, revision: 1 }));
    },
    async create(key, value) {
      data.set(key, copy(value)!);
      return 1;
    },
    async mutate(key, fn) {
      const next = await fn(copy(data.get(key)));
      if (next === undefined) return copy(data.get(key));
      this.writes++;
      if (next === REMOVE) data.delete(key);
      else data.set(key, copy(next)!);
      return copy(next === REMOVE ? undefined : next);
    },
    async delete(key) {
      data.delete(key);
    },
  };
}

const allocator = (mode: SubidMode, poolBlocks = 4, store = memoryStore(), maxTableBytes?: number) =>
  createSubidAlloc({
    mode,
    pool: { start: START, size: poolBlocks * B },
    store,
    now: () => new Date('2026-11-29T00:00:00.000Z'),
    maxTableBytes,
  });

describe('createSubidAlloc, shared mode', () => {
  it('gives every container the start of the pool, records each, frees known ids', async () => {
    const a = allocator('shared');
    expect(await a.alloc('c1', B)).toEqual({ uid: START, gid: START, size: B });
    expect(await a.alloc('c2', 2 * B)).toEqual({ uid: START, gid: START, size: 2 * B });
    expect(await a.alloc('c3', 1000)).toEqual({ uid: START, gid: START, size: 1000 });
    expect((await a.list()).allocations.map((r) => r.id)).toEqual(['c1', 'c2', 'c3']);
    await a.free('c1');
    await expect(a.free('c1')).rejects.toMatchObject({ code: 'not-found' });
    expect((await a.list()).allocations.map((r) => r.id)).toEqual(['c2', 'c3']);
  });

  it.each([0, 4 * B + 1, 2 ** 32 + 1])('refuses size %d with invalid-size', async (size) => {
    await expect(allocator('shared').alloc('c', size)).rejects.toMatchObject({ code: 'invalid-size' });
  });
});

describe('createSubidAlloc, exclusive mode', () => {
  it('hands out aligned blocks first fit, reuses freed holes, answers the same block for the same id', async () => {
    const a = allocator('exclusive', 8);
    expect(await a.alloc('a', B)).toEqual({ uid: START, gid: START, size: B });
    expect(await a.alloc('b', 2 * B)).toEqual({ uid: START + B, gid: START + B, size: 2 * B });
    expect(await a.alloc('c', B)).toEqual({ uid: START + 3 * B, gid: START + 3 * B, size: B });
    await a.free('b');
    expect(await a.alloc('d', B)).toMatchObject({ uid: START + B });
    expect(await a.alloc('e', 2 * B)).toMatchObject({ uid: START + 4 * B });
    expect(await a.alloc('f', B)).toMatchObject({ uid: START + 2 * B });
    expect(await a.alloc('a', B)).toMatchObject({ uid: START });
    const list = await a.list();
    expect(list.mode).toBe('exclusive');
    expect(list.pool).toEqual({ uid: START, gid: START, size: 8 * B });
    expect(list.allocations.map((r) => [r.id, (r.uid - START) / B, r.size / B])).toEqual([
      ['a', 0, 1],
      ['d', 1, 1],
      ['f', 2, 1],
      ['c', 3, 1],
      ['e', 4, 2],
    ]);
    expect(list.allocations[0]!.allocatedAt).toBe('2026-11-29T00:00:00.000Z');
  });

  it('is exhausted exactly when no block fits, and serves again after a free', async () => {
    const a = allocator('exclusive', 4);
    for (const id of ['a', 'b', 'c']) await a.alloc(id, B);
    await expect(a.alloc('big', 2 * B)).rejects.toMatchObject({ code: 'exhausted' });
    await a.alloc('d', B);
    await expect(a.alloc('e', B)).rejects.toMatchObject({ code: 'exhausted' });
    await a.free('b');
    await a.free('c');
    expect(await a.alloc('big', 2 * B)).toMatchObject({ uid: START + B, size: 2 * B });
  });

  it.each([
    ['zero', 0],
    ['not a multiple of the block', B + 1],
    ['more than the pool', 5 * B],
    ['more than 2^32', 2 ** 32 + B],
  ])('refuses a size that is %s with invalid-size and changes nothing', async (_name, size) => {
    const store = memoryStore();
    await expect(allocator('exclusive', 4, store).alloc('c', size)).rejects.toMatchObject({ code: 'invalid-size' });
    expect(store.writes).toBe(0);
  });

  it('refuses a second alloc of an id with another size', async () => {
    const a = allocator('exclusive');
    await a.alloc('c', B);
    await expect(a.alloc('c', 2 * B)).rejects.toMatchObject({ code: 'invalid-size', message: /already holds 65536 ids/ });
  });

  it('unknown id on free is not-found', async () => {
    await expect(allocator('exclusive').free('nobody')).rejects.toMatchObject({ code: 'not-found' });
  });

  it('folds concurrent requests into few writes and gives distinct blocks', async () => {
    const store = memoryStore();
    const a = allocator('exclusive', 64, store);
    const replies = await Promise.all(Array.from({ length: 64 }, (_, i) => a.alloc(`c${i}`, B)));
    expect(new Set(replies.map((r) => r.uid)).size).toBe(64);
    expect(store.writes).toBeLessThanOrEqual(2);
    await expect(a.alloc('one-too-many', B)).rejects.toMatchObject({ code: 'exhausted' });
  });

  it('skips ranges recorded outside the current pool (e.g. after the pool moved) without overlapping them', async () => {
    const store = memoryStore();
    await store.create(TABLE_KEY, {
      allocations: [{ id: 'old', start: START + B + 100, size: B, allocatedAt: '2026-01-01T00:00:00.000Z' }],
    });
    const a = allocator('exclusive', 4, store);
    expect(await a.alloc('x', B)).toMatchObject({ uid: START });
    expect(await a.alloc('y', B)).toMatchObject({ uid: START + 3 * B });
    expect(await a.alloc('old', B)).toMatchObject({ uid: START + B + 100 });
  });

  it('answers exhausted when the table would outgrow one KV value', async () => {
    const a = allocator('exclusive', 16, memoryStore(), 300);
    await a.alloc('a', B);
    await a.alloc('b', B);
    await expect(a.alloc('c'.repeat(128), B)).rejects.toMatchObject({ code: 'exhausted', message: /table is full/ });
  });

  it('a failed store write rejects the whole batch and the next request still runs', async () => {
    const store = memoryStore();
    const mutate = store.mutate.bind(store);
    let fail = true;
    store.mutate = async (key, fn) => {
      if (fail) throw Object.assign(new Error('store down'), { code: 'unavailable' });
      return mutate(key, fn);
    };
    const a = allocator('exclusive', 4, store);
    await expect(Promise.all([a.alloc('a', B), a.alloc('b', B)])).rejects.toMatchObject({ code: 'unavailable' });
    fail = false;
    expect(await a.alloc('a', B)).toMatchObject({ uid: START });
  });
});
