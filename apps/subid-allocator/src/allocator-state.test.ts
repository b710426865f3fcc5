/**
 * Per-key state on a real nats-server (issue: state that scales per key): allocators on separate
 * connections racing for blocks, multi-block runs, what a crash between two writes leaves and who
 * repairs it, migration from the single-key table, and list pages.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import {
  SUBID_BLOCK,
  SUBID_LIST_DEFAULT_LIMIT,
  subidList,
  subidService,
  type SubidAllocReply,
} from '@sysbox-mgr-ts/contracts';
import { silentLogger, createServiceClient, serve, type MicroService } from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, describe, expect, it } from 'vitest';
import { createSubidAlloc, type SubidAllocator, type SubidMode } from './allocator.js';
import { createSubidBindings } from './service.js';
import { LEGACY_TABLE_KEY, openSubidStores, type SubidStores } from './subid-store.js';

const B = SUBID_BLOCK;
const silent = silentLogger;
const START = 100000;

function overlaps(ranges: readonly { uid: number; size: number }[]): number {
  const sorted = [...ranges].sort((a, b) => a.uid - b.uid);
  return sorted.filter((r, i) => i > 0 && sorted[i - 1]!.uid + sorted[i - 1]!.size > r.uid).length;
}

describe('per-key subid state on a real nats-server', () => {
  const nats = useNatsServer();
  const connections: NatsConnection[] = [];
  const services: MicroService[] = [];

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    await Promise.all(connections.map((nc) => nc.close()));
  });

  /** Its own connection and stores: as separate from the others as another process. */
  const stores = async (node: string): Promise<SubidStores> => {
    const nc = await nats.ns.connect();
    connections.push(nc);
    return openSubidStores(nc, { node });
  };
  const allocator = async (
    node: string,
    poolBlocks: number,
    mode: SubidMode = 'exclusive',
  ): Promise<SubidAllocator> =>
    createSubidAlloc({ mode, pool: { start: START, size: poolBlocks * B }, stores: await stores(node) });

  it('two allocators on two connections: 200 concurrent allocs give 200 distinct blocks, then exhausted on both', async () => {
    const [a, b] = [await allocator('race', 200), await allocator('race', 200)];
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).alloc(`c${i}`, B)),
    );
    expect(new Set(replies.map((r) => r.uid)).size).toBe(200);
    expect(overlaps(replies)).toBe(0);
    await expect(a.alloc('c200', B)).rejects.toMatchObject({ code: 'exhausted' });
    await expect(b.alloc('c201', B)).rejects.toMatchObject({ code: 'exhausted' });
    // Each block's claim names the container that got it.
    const view = await stores('race');
    for (const [i, r] of replies.entries())
      expect((await view.blocks.get(String(r.uid)))?.value.id).toBe(`c${i}`);
  });

  it('the same id asked of two allocators at once gets one range; free then alloc again', async () => {
    const [a, b] = [await allocator('same', 8), await allocator('same', 8)];
    const [r1, r2] = await Promise.all([a.alloc('web', 2 * B), b.alloc('web', 2 * B)]);
    expect(r1).toEqual(r2);
    expect(await b.alloc('web', 2 * B)).toEqual(r1);
    await expect(a.alloc('web', B)).rejects.toMatchObject({ code: 'invalid-size' });
    await a.free('web');
    await expect(b.free('web')).rejects.toMatchObject({ code: 'not-found' });
    const view = await stores('same');
    expect(await view.blocks.get(String(r1.uid))).toBeUndefined();
    // The allocator that freed knows the blocks are free again (the other learns it on its next read of the claims).
    expect(await a.alloc('db', 2 * B)).toMatchObject({ uid: r1.uid });
  });

  it('multi-block runs are contiguous and wholly claimed, even when allocators race for the same blocks', async () => {
    const [a, b] = [await allocator('multi', 64), await allocator('multi', 64)];
    const sizes = [3, 1, 2, 4, 1, 3, 2, 1, 5, 2, 1, 3];
    const replies = await Promise.all(sizes.map((n, i) => (i % 2 ? a : b).alloc(`m${i}`, n * B)));
    expect(overlaps(replies)).toBe(0);
    const view = await stores('multi');
    for (const [i, r] of replies.entries()) {
      expect(r.size).toBe(sizes[i]! * B);
      for (let k = 0; k < sizes[i]!; k++)
        expect((await view.blocks.get(String(r.uid + k * B)))?.value.id).toBe(`m${i}`);
    }
    // Only blocks of granted runs are claimed: claims rolled back on conflict are gone.
    const claimed = [];
    for (const key of await view.blocks.keys()) if (await view.blocks.get(key)) claimed.push(key);
    expect(claimed).toHaveLength(sizes.reduce((n, s) => n + s, 0));
  });

  describe('a process killed between two writes', () => {
    it('claim without a record (killed after the record went in a free): the start reconcile deletes it', async () => {
      const s = await stores('orphan-start');
      await s.blocks.create(String(START), { id: 'ghost', token: 'gone' });
      const a = await allocator('orphan-start', 2);
      expect(await a.reconcile()).toMatchObject({ orphanClaims: 1, claimedBlocks: 0 });
      expect(await s.blocks.get(String(START))).toBeUndefined();
      expect(await a.alloc('a', B)).toMatchObject({ uid: START });
    });

    it('claim without a record, appearing while an allocator runs: the next claim of that block takes it over', async () => {
      const a = await allocator('orphan-live', 1);
      await a.reconcile();
      const s = await stores('orphan-live');
      await s.blocks.create(String(START), { id: 'ghost', token: 'gone' });
      expect(await a.alloc('a', B)).toMatchObject({ uid: START });
      expect((await s.blocks.get(String(START)))?.value.id).toBe('a');
    });

    it('record without its claim (killed after the intent): the next alloc of that id carries it on', async () => {
      const s = await stores('intent');
      await s.ids.create('web', {
        start: START + B,
        size: B,
        allocatedAt: new Date().toISOString(),
        token: 'attempt1',
        claimed: false,
      });
      const a = await allocator('intent', 4);
      expect(await a.reconcile()).toMatchObject({ staleAttempts: 0 });
      expect((await a.list()).allocations).toEqual([]);
      expect(await a.alloc('web', B)).toEqual({ uid: START + B, gid: START + B, size: B });
      expect((await s.blocks.get(String(START + B)))?.value).toEqual({ id: 'web', token: 'attempt1' });
      expect((await s.ids.get('web'))?.value.claimed).toBe(true);
    });

    it('record and claim but no confirm (killed before the last write): the next alloc of that id hands out that range', async () => {
      const s = await stores('unconfirmed');
      await s.ids.create('web', {
        start: START + 2 * B,
        size: 2 * B,
        allocatedAt: new Date().toISOString(),
        token: 'attempt1',
        claimed: false,
      });
      await s.blocks.create(String(START + 2 * B), { id: 'web', token: 'attempt1' });
      await s.blocks.create(String(START + 3 * B), { id: 'web', token: 'attempt1' });
      const a = await allocator('unconfirmed', 4);
      expect(await a.alloc('web', 2 * B)).toMatchObject({ uid: START + 2 * B });
      expect(await a.alloc('other', 2 * B)).toMatchObject({ uid: START });
    });

    it('an attempt nobody came back for: the start reconcile releases its record and claims once stale', async () => {
      const s = await stores('stale');
      await s.ids.create('gone', {
        start: START,
        size: B,
        allocatedAt: '2026-01-01T00:00:00.000Z',
        token: 'attempt1',
        claimed: false,
      });
      await s.blocks.create(String(START), { id: 'gone', token: 'attempt1' });
      const a = await allocator('stale', 1);
      expect(await a.reconcile()).toMatchObject({ staleAttempts: 1, orphanClaims: 1, claimedBlocks: 0 });
      expect(await a.alloc('new', B)).toMatchObject({ uid: START });
    });
  });

  describe('migration from the single-key table', () => {
    const legacy = (n: number) => ({
      allocations: Array.from({ length: n }, (_, i) => ({
        id: `old${i}`,
        start: START + 2 * i * B,
        size: B,
        allocatedAt: '2026-01-01T00:00:00.000Z',
      })),
    });

    it('two allocators starting together migrate each allocation once, keep its range, and remove the table', async () => {
      const s = await stores('migrate');
      await s.legacyTable.create(LEGACY_TABLE_KEY, legacy(50));
      const [a, b] = [await allocator('migrate', 128), await allocator('migrate', 128)];
      const [ra, rb] = await Promise.all([a.reconcile(), b.reconcile()]);
      expect(ra.migrated + rb.migrated).toBe(50);
      expect(await s.legacyTable.get(LEGACY_TABLE_KEY)).toBeUndefined();
      const listed = (await a.list()).allocations;
      expect(listed).toHaveLength(50);
      for (let i = 0; i < 50; i++)
        expect(await b.alloc(`old${i}`, B)).toMatchObject({ uid: START + 2 * i * B });
      // New allocations fill the holes between migrated ranges, never a migrated block.
      const fresh = await Promise.all(
        Array.from({ length: 78 }, (_, i) => (i % 2 ? a : b).alloc(`new${i}`, B)),
      );
      expect(overlaps([...listed, ...fresh])).toBe(0);
      await expect(a.alloc('one-more', B)).rejects.toMatchObject({ code: 'exhausted' });
    });

    it('a replica that read the table late does not bring back an allocation freed since', async () => {
      const s = await stores('late');
      await s.legacyTable.create(LEGACY_TABLE_KEY, legacy(3));
      const stale = await s.legacyTable.get(LEGACY_TABLE_KEY);
      const a = await allocator('late', 8);
      await a.reconcile();
      await a.free('old1');
      // A second replica whose read of the table came before the first removed it (a delete
      // leaves no trace in the bucket: its create of old1 succeeds, and must be undone).
      const lateStores = await stores('late');
      let reads = 0;
      const legacyTable: typeof lateStores.legacyTable = {
        ...lateStores.legacyTable,
        get: (key) => (reads++ === 0 ? Promise.resolve(stale) : lateStores.legacyTable.get(key)),
      };
      const late = createSubidAlloc({
        mode: 'exclusive',
        pool: { start: START, size: 8 * B },
        stores: { ...lateStores, legacyTable },
      });
      expect(await late.reconcile()).toMatchObject({ migrated: 0 });
      expect(reads).toBeGreaterThan(1);
      expect((await late.list()).allocations.map((r) => r.id)).toEqual(['old0', 'old2']);
    });
  });

  describe('list pages', () => {
    it('walks more than one page with cursors; the default page is bounded and says where to go on', async () => {
      const a = await allocator('pages', 1, 'shared');
      const ids = Array.from(
        { length: SUBID_LIST_DEFAULT_LIMIT + 250 },
        (_, i) => `container-${String(i).padStart(5, '0')}`,
      );
      for (let i = 0; i < ids.length; i += 200)
        await Promise.all(ids.slice(i, i + 200).map((id) => a.alloc(id, B)));
      await a.free('container-00010');

      const nc = await nats.ns.connect();
      connections.push(nc);
      services.push(
        serve({
          nc,
          service: subidService,
          node: 'pages',
          version: '0',
          log: silent(),
          bindings: createSubidBindings({ allocator: a }),
        }),
      );
      const client = createServiceClient(nc, { node: 'pages' });
      // An old caller: `{}` gets the first page of the default size, and the raw reply stays far under max_payload.
      const raw = await nc.request(subidList.subject('pages'), '{}');
      expect(raw.data.length).toBeLessThan(512 * 1024);
      const first = await client.call(subidList, {});
      expect(first.allocations).toHaveLength(SUBID_LIST_DEFAULT_LIMIT);
      expect(first.next).toBeDefined();

      const seen: string[] = [];
      let pages = 0;
      for (let cursor: string | undefined; pages === 0 || cursor !== undefined; pages++) {
        const page = await client.call(subidList, { cursor, limit: 300 });
        expect(page.allocations.length).toBeLessThanOrEqual(300);
        seen.push(...page.allocations.map((r: SubidAllocReply & { id: string }) => r.id));
        cursor = page.next;
      }
      expect(pages).toBeGreaterThanOrEqual(5);
      expect(seen).toEqual(ids.filter((id) => id !== 'container-00010'));
      await expect(client.call(subidList, { limit: 0 } as never)).rejects.toMatchObject({
        code: 'invalid-request',
      });
    });
  });
});
