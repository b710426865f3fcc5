import { REMOVE } from '@sysbox-mgr-ts/kv-state';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { describe, expect, it } from 'vitest';
import { openMarkStore, type MarkRecord } from './mark-store.js';

const record = (source: string, holders: string[]): MarkRecord => ({
  source,
  markpoint: source,
  createdMarkpoint: false,
  holders,
  state: 'mounted',
  markedAt: '2026-11-29T00:00:00.000Z',
  since: '2026-11-29T00:00:00.000Z',
  claimId: 'c',
});

describe('mark store on a real nats-server', () => {
  const nats = useNatsServer();

  it('lists only live records of its own node, sorted, and skips deleted ones', async () => {
    const store = await openMarkStore(nats.nc, { node: 'n1' });
    const other = await openMarkStore(nats.nc, { node: 'n2' });
    await store.create('bbb', record('/b', ['c1']));
    await store.create('aaa', record('/a', ['c1']));
    await store.create('ccc', record('/c', ['c1']));
    await other.create('aaa', record('/x', ['c9']));
    await store.mutate('ccc', () => REMOVE);
    expect((await store.list()).map((r) => [r.key, r.value.source])).toEqual([
      ['aaa', '/a'],
      ['bbb', '/b'],
    ]);
    expect((await other.list()).map((r) => r.value.source)).toEqual(['/x']);
  });

  it('lists promptly while other writers update the same record (kv.keys() can hang here)', async () => {
    const store = await openMarkStore(nats.nc, { node: 'busy' });
    await store.create('k', record('/k', []));
    let writes = 0;
    const writer = (async () => {
      for (let i = 0; i < 30; i++) {
        await new Promise((r) => setTimeout(r, Math.random() * 4));
        await store.mutate('k', (cur) => cur && { ...cur, holders: [`c${i}`] });
        writes++;
      }
    })();
    const listings = await Promise.all(Array.from({ length: 10 }, () => store.list()));
    await writer;
    expect(writes).toBe(30);
    expect(listings.every((l) => l.length === 1 && l[0]!.key === 'k')).toBe(true);
  });
});
