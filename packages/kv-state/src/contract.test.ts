/**
 * The state rules, run against the JetStream store and the in-memory one alike: what unit tests
 * get from `@sysbox-mgr-ts/kv-state/testing` is what production gets from the server.
 */
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { REMOVE, createStateStore, openBucket, type KvStateStore } from './index.js';
import { createMemoryStore } from '../test/memory-store.js';

const Rec = z.object({ n: z.number(), tags: z.array(z.string()) });
type Rec = z.infer<typeof Rec>;

const nats = useNatsServer();
let bucketSeq = 0;

const stores: [string, () => Promise<KvStateStore<Rec>>][] = [
  [
    'JetStream',
    async () =>
      createStateStore(await openBucket(nats.nc, `rules-${++bucketSeq}`), { node: 'n1', schema: Rec }),
  ],
  ['in memory', async () => createMemoryStore<Rec>()],
];

describe.each(stores)('%s store', (_name, make) => {
  it('peek answers what this store last wrote, as a copy, and nothing for a deleted key', async () => {
    const s = await make();
    expect(s.peek('a')).toBeUndefined();
    const rev = await s.create('a', { n: 1, tags: [] });
    expect(s.peek('a')).toEqual({ key: 'a', value: { n: 1, tags: [] }, revision: rev });
    s.peek('a')!.value.tags.push('edited');
    await s.mutate('a', (cur) => cur && { ...cur, n: 2 });
    expect(s.peek('a')?.value).toEqual({ n: 2, tags: [] });
    await s.delete('a');
    expect(s.peek('a')).toBeUndefined();
  });

  it('hands out copies: editing what get or list returned changes nothing stored', async () => {
    const s = await make();
    await s.create('a', { n: 1, tags: ['x'] });
    (await s.get('a'))!.value.tags.push('edited');
    (await s.list())[0]!.value.n = 99;
    expect((await s.get('a'))!.value).toEqual({ n: 1, tags: ['x'] });
  });

  it('create refuses a live key, succeeds over a deleted one; a deleted key is no longer listed', async () => {
    const s = await make();
    await s.create('a', { n: 1, tags: [] });
    await expect(s.create('a', { n: 2, tags: [] })).rejects.toMatchObject({ code: 'already-exists' });
    await s.delete('a');
    await s.create('a', { n: 3, tags: [] });
    await s.delete('a');
    await s.create('b', { n: 5, tags: [] });
    await s.change('c', () => ({ n: 6, tags: [] }));
    await s.change('c', () => REMOVE);
    expect((await s.list()).map((v) => v.key)).toEqual(['b']);
    expect(await s.keys()).toEqual(['b']);
  });

  it('change tells whether it wrote, with the revision get then shows', async () => {
    const s = await make();
    const created = await s.change('a', () => ({ n: 1, tags: [] }));
    expect(created).toMatchObject({ wrote: true, value: { n: 1, tags: [] } });
    expect((await s.get('a'))!.revision).toBe(created.revision);
    const unchanged = await s.change('a', () => undefined);
    expect(unchanged).toEqual({ wrote: false, value: { n: 1, tags: [] }, revision: created.revision });
    expect(await s.change('a', () => REMOVE)).toMatchObject({ wrote: true, value: undefined });
    expect(await s.change('a', () => REMOVE)).toMatchObject({ wrote: false, value: undefined });
    expect(await s.get('a')).toBeUndefined();
  });

  it('a delete with a revision is compare-and-set', async () => {
    const s = await make();
    const r1 = await s.create('a', { n: 1, tags: [] });
    const r2 = (await s.change('a', (c) => ({ ...c!, n: 2 }))).revision;
    await expect(s.delete('a', { revision: r1 })).rejects.toMatchObject({ code: 'failed-precondition' });
    expect((await s.get('a'))!.value.n).toBe(2);
    await s.delete('a', { revision: r2 });
    expect(await s.get('a')).toBeUndefined();
  });
});
