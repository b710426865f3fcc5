import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { createMemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { describe, expect, it } from 'vitest';
import { createSubidAlloc, type SubidMode } from './allocator.js';
import { LEGACY_TABLE_KEY, type SubidStores } from './subid-store.js';

const B = 65536;
const START = 165536;

function memoryStores(): SubidStores & { writes: number } {
  const counter = { writes: 0 };
  const memoryStore = <T>() => createMemoryStore<T>({ onWrite: () => void counter.writes++ });
  return Object.assign(counter, {
    ids: memoryStore(),
    blocks: memoryStore(),
    legacyTable: memoryStore(),
  }) as SubidStores & {
    writes: number;
  };
}

const allocator = (mode: SubidMode, poolBlocks = 4, stores = memoryStores(), maxListBytes?: number) =>
  createSubidAlloc({
    mode,
    pool: { start: START, size: poolBlocks * B },
    stores,
    now: () => new Date('2026-11-29T00:00:00.000Z'),
    maxListBytes,
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
    // Listed in container id order, the order of the keys.
    expect(list.allocations.map((r) => [r.id, (r.uid - START) / B, r.size / B])).toEqual([
      ['a', 0, 1],
      ['c', 3, 1],
      ['d', 1, 1],
      ['e', 4, 2],
      ['f', 2, 1],
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
    const stores = memoryStores();
    await expect(allocator('exclusive', 4, stores).alloc('c', size)).rejects.toMatchObject({
      code: 'invalid-size',
    });
    expect(stores.writes).toBe(0);
  });

  it('refuses a second alloc of an id with another size', async () => {
    const a = allocator('exclusive');
    await a.alloc('c', B);
    await expect(a.alloc('c', 2 * B)).rejects.toMatchObject({
      code: 'invalid-size',
      message: /already holds 65536 ids/,
    });
  });

  it('unknown id on free is not-found', async () => {
    await expect(allocator('exclusive').free('nobody')).rejects.toMatchObject({ code: 'not-found' });
  });

  it('gives concurrent requests distinct blocks, three writes each (intent, claim, confirm)', async () => {
    const stores = memoryStores();
    const a = allocator('exclusive', 64, stores);
    const replies = await Promise.all(Array.from({ length: 64 }, (_, i) => a.alloc(`c${i}`, B)));
    expect(new Set(replies.map((r) => r.uid)).size).toBe(64);
    expect(stores.writes).toBe(3 * 64);
    await expect(a.alloc('one-too-many', B)).rejects.toMatchObject({ code: 'exhausted' });
  });

  it('skips ranges recorded outside the current pool (e.g. after the pool moved) without overlapping them', async () => {
    const stores = memoryStores();
    await stores.legacyTable.create(LEGACY_TABLE_KEY, {
      allocations: [{ id: 'old', start: START + B + 100, size: B, allocatedAt: '2026-01-01T00:00:00.000Z' }],
    });
    const a = allocator('exclusive', 4, stores);
    expect(await a.alloc('x', B)).toMatchObject({ uid: START });
    expect(await a.alloc('y', B)).toMatchObject({ uid: START + 3 * B });
    expect(await a.alloc('old', B)).toMatchObject({ uid: START + B + 100 });
  });

  it('stops a list page before it outgrows the reply limit, and the next page carries on', async () => {
    const a = allocator('shared', 1, memoryStores(), 600);
    const ids = Array.from({ length: 5 }, (_, i) => `c${i}${'x'.repeat(60)}`);
    for (const id of ids) await a.alloc(id, B);
    const first = await a.list();
    expect(first.allocations.length).toBeGreaterThan(0);
    expect(first.allocations.length).toBeLessThan(5);
    expect(JSON.stringify(first).length).toBeLessThanOrEqual(600);
    const seen = [...first.allocations];
    for (let next = first.next; next !== undefined;) {
      const page = await a.list({ cursor: next });
      seen.push(...page.allocations);
      next = page.next;
    }
    expect(seen.map((r) => r.id)).toEqual(ids);
  });

  it('a failed claim write fails the request, leaves its intent behind, and the retry completes it', async () => {
    const stores = memoryStores();
    const create = stores.blocks.create.bind(stores.blocks);
    let fail = true;
    stores.blocks.create = async (key, value) => {
      if (fail) throw new SysboxError('unavailable', 'store down');
      return create(key, value);
    };
    const a = allocator('exclusive', 4, stores);
    await expect(a.alloc('a', B)).rejects.toMatchObject({ code: 'unavailable' });
    expect((await stores.ids.get('a'))?.value).toMatchObject({ start: START, claimed: false });
    expect((await a.list()).allocations).toEqual([]);
    fail = false;
    expect(await a.alloc('a', B)).toMatchObject({ uid: START });
    expect(await a.alloc('b', B)).toMatchObject({ uid: START + B });
  });
});

describe('createSubidAlloc, records read back from KV', () => {
  it.each(['shared', 'exclusive'] as const)(
    '%s: refuses and never lists a forged range outside the pool (root, a host user, past its end)',
    async (mode) => {
      const stores = memoryStores();
      const at = '2026-11-29T00:00:00.000Z';
      await stores.legacyTable.create(LEGACY_TABLE_KEY, {
        allocations: [
          { id: 'root', start: 0, size: B, allocatedAt: at },
          { id: 'user', start: 1000, size: B, allocatedAt: at },
          { id: 'straddle', start: START + 4 * B - 1, size: B, allocatedAt: at },
          { id: 'fine', start: START, size: B, allocatedAt: at },
        ],
      });
      const a = allocator(mode, 4, stores);
      for (const id of ['root', 'user', 'straddle']) {
        await expect(a.alloc(id, B), id).rejects.toMatchObject({
          code: 'internal',
          message: expect.stringContaining('outside the pool'),
        });
      }
      expect(await a.alloc('fine', B)).toEqual({ uid: START, gid: START, size: B });
      expect((await a.list()).allocations.map((r) => r.id)).toEqual(['fine']);
    },
  );
});
