import { TimeoutError, type NatsConnection } from '@nats-io/nats-core';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { REMOVE, createStateStore, decodeKeyToken, encodeKeyToken, openBucket } from './index.js';

const Counter = z.object({ n: z.number().int() });

describe('kv-state on a real nats-server', () => {
  let ns: NatsServer;
  let nc1: NatsConnection;
  let nc2: NatsConnection;
  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true });
    nc1 = await ns.connect();
    nc2 = await ns.connect();
  });
  afterAll(async () => {
    await nc1?.close();
    await nc2?.close();
    await ns?.stop();
  });

  it('two writers doing N CAS increments on one key end at exactly 2N', async () => {
    const a = createStateStore(await openBucket(nc1, 'counter'), { node: 'n1', schema: Counter });
    const b = createStateStore(await openBucket(nc2, 'counter'), { node: 'n1', schema: Counter });
    const N = 100;
    const inc = (c: { n: number } | undefined) => ({ n: (c?.n ?? 0) + 1 });
    await Promise.all([
      (async () => {
        for (let i = 0; i < N; i++) await a.mutate('c', inc);
      })(),
      (async () => {
        for (let i = 0; i < N; i++) await b.mutate('c', inc);
      })(),
    ]);
    expect((await a.get('c'))?.value.n).toBe(2 * N);
  });

  it('a full bucket refuses writes with `exhausted` and keeps what it holds', async () => {
    const kv = await openBucket(nc1, 'tiny', { maxBytes: 4096, maxValueSize: 512 });
    const store = createStateStore(kv, { node: 'n1', schema: z.object({ pad: z.string() }) });
    await expect(store.create('big', { pad: 'x'.repeat(1000) })).rejects.toMatchObject({ code: 'exhausted' });
    let written = 0;
    let refusal: unknown;
    for (let i = 0; i < 100 && !refusal; i++) {
      await store.create(`k${i}`, { pad: 'x'.repeat(200) }).then(
        () => written++,
        (err: unknown) => (refusal = err),
      );
    }
    expect(refusal).toMatchObject({ code: 'exhausted' });
    expect(written).toBeGreaterThan(5);
    expect((await store.list()).length).toBe(written);
  });

  it('reads go to the stream leader (no direct get), so a reader sees the last committed write', async () => {
    const kv = await openBucket(nc1, 'leader-reads');
    expect((await kv.status()).streamInfo.config.allow_direct).toBe(false);
  });

  it('a CAS write whose answer was lost is read back: applied once if it landed, written again if not', async () => {
    const real = await openBucket(nc1, 'lost-answers');
    let mode: 'land-then-lose' | 'lose-before' | 'normal' = 'normal';
    // The bucket as a failover shows it: the update reaches the leader (or not) and the answer is lost.
    const flaky = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop !== 'update') return Reflect.get(target, prop, receiver);
        return async (k: string, data: string, rev: number) => {
          const m = mode;
          mode = 'normal';
          if (m === 'lose-before') throw new TimeoutError();
          const r = await target.update(k, data, rev);
          if (m === 'land-then-lose') throw new TimeoutError();
          return r;
        };
      },
    });
    const store = createStateStore(flaky, { node: 'n1', schema: Counter });
    await store.create('c', { n: 0 });
    const inc = (c: { n: number } | undefined) => ({ n: (c?.n ?? 0) + 1 });
    mode = 'land-then-lose';
    expect(await store.mutate('c', inc)).toEqual({ n: 1 });
    mode = 'lose-before';
    expect(await store.mutate('c', inc)).toEqual({ n: 2 });
    // Read by another store: exactly two increments landed.
    expect((await createStateStore(real, { node: 'n1', schema: Counter }).get('c'))?.value).toEqual({ n: 2 });
  });

  it('create refuses an existing key, also after a concurrent create', async () => {
    const s = createStateStore(await openBucket(nc1, 'create'), { node: 'n1', schema: Counter });
    const results = await Promise.allSettled([s.create('x', { n: 1 }), s.create('x', { n: 2 })]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason.code).toBe('already-exists');
  });

  it('lists, deletes by mutation and recreates after a delete, scoped by node and namespace', async () => {
    const kv = await openBucket(nc1, 'scoped');
    const s = createStateStore(kv, { node: 'n1', namespace: 'docker', schema: Counter });
    const other = createStateStore(kv, { node: 'n2', namespace: 'docker', schema: Counter });
    await s.create('a.b+c', { n: 1 });
    await s.create('d', { n: 2 });
    await other.create('a.b+c', { n: 9 });
    expect((await s.list()).map((v) => [v.key, v.value.n])).toEqual([
      ['a.b+c', 1],
      ['d', 2],
    ]);
    await s.mutate('d', () => REMOVE);
    expect(await s.get('d')).toBeUndefined();
    await s.create('d', { n: 3 });
    expect((await s.get('d'))?.value.n).toBe(3);
    expect((await other.list()).map((v) => v.value.n)).toEqual([9]);
  });

  it('lists promptly while another writer updates a key (kv.keys() can hang on nats-server 2.9 here)', async () => {
    const kv = await openBucket(nc1, 'busy');
    const writer = createStateStore(kv, { node: 'n1', schema: Counter });
    const reader = createStateStore(await openBucket(nc2, 'busy'), { node: 'n1', schema: Counter });
    await writer.create('k', { n: 0 });
    await writer.create('other', { n: 0 });
    const writes = (async () => {
      for (let i = 0; i < 30; i++) {
        await new Promise((r) => setTimeout(r, Math.random() * 4));
        await writer.mutate('k', (c) => ({ n: c!.n + 1 }));
      }
    })();
    const listings = await Promise.all(Array.from({ length: 10 }, () => reader.list()));
    await writes;
    for (const l of listings) expect(l.map((v) => v.key)).toEqual(['k', 'other']);
  });

  it('a delete leaves nothing in the bucket: messages, bytes and subjects count live keys only (#25)', async () => {
    const kv = await openBucket(nc1, 'no-tombstones');
    const s = createStateStore(kv, { node: 'n1', namespace: 'ns', schema: Counter });
    await s.create('live', { n: 1 });
    const state = async () => (await kv.status()).streamInfo.state;
    const one = await state();
    for (let i = 0; i < 200; i++) {
      await s.create(`c${i}`, { n: i });
      await s.mutate(`c${i}`, (c) => ({ n: c!.n + 1 }));
      if (i % 2) await s.delete(`c${i}`);
      else await s.mutate(`c${i}`, () => REMOVE);
    }
    const after = await state();
    expect([after.messages, after.bytes]).toEqual([one.messages, one.bytes]);
    expect(await s.keys()).toEqual(['live']);
    expect((await s.list()).map((v) => v.key)).toEqual(['live']);
  });

  it('a delete at a stale revision keeps a value written since; a create after a delete starts afresh', async () => {
    const kv = await openBucket(nc1, 'cas-delete');
    const a = createStateStore(kv, { node: 'n1', schema: Counter });
    const b = createStateStore(await openBucket(nc2, 'cas-delete'), { node: 'n1', schema: Counter });
    const r1 = await a.create('k', { n: 1 });
    await b.delete('k', { revision: r1 });
    const r2 = await b.create('k', { n: 2 });
    await expect(a.delete('k', { revision: r1 })).rejects.toMatchObject({ code: 'failed-precondition' });
    // a's remembered revision is stale: its removal reads again and removes what is there now.
    expect(await a.mutate('k', (c) => (c?.n === 2 ? REMOVE : undefined))).toBeUndefined();
    await expect(b.delete('k', { revision: r2 })).rejects.toMatchObject({ code: 'failed-precondition' });
    expect(await b.get('k')).toBeUndefined();
    await expect(b.create('k', { n: 3 })).resolves.toBeGreaterThan(r2);
  });

  it('delete markers kv.delete() left (older state, nats kv del) are removed by the list that meets them', async () => {
    const kv = await openBucket(nc1, 'old-markers');
    const s = createStateStore(kv, { node: 'n1', schema: Counter });
    for (let i = 0; i < 20; i++) {
      await kv.put(`n1.old${i}`, JSON.stringify({ n: i }));
      await kv.delete(`n1.old${i}`);
    }
    await s.create('live', { n: 1 });
    expect((await kv.status()).streamInfo.state.messages).toBe(21);
    expect((await s.list()).map((v) => v.key)).toEqual(['live']);
    expect((await kv.status()).streamInfo.state.messages).toBe(1);
    expect(await s.keys()).toEqual(['live']);
  });

  it('a value that breaks the schema is an internal error, not a crash', async () => {
    const kv = await openBucket(nc1, 'bad');
    await kv.put('n1.k', JSON.stringify({ n: 'not a number' }));
    const s = createStateStore(kv, { node: 'n1', schema: Counter });
    await expect(s.get('k')).rejects.toMatchObject({ code: 'internal' });
  });

  it('state survives a server restart', async () => {
    const s = createStateStore(await openBucket(nc1, 'durable'), { node: 'n1', schema: Counter });
    await s.create('k', { n: 42 });
    await ns.restart();
    const nc = await ns.connect();
    const again = createStateStore(await openBucket(nc, 'durable'), { node: 'n1', schema: Counter });
    expect((await again.get('k'))?.value.n).toBe(42);
    await nc.close();
  });

  it('escapes key tokens both ways', () => {
    for (const id of ['abc', 'a.b', 'a+b', 'x=y', 'A_b-9']) {
      expect(encodeKeyToken(id)).toMatch(/^[-_a-zA-Z0-9=]+$/);
      expect(decodeKeyToken(encodeKeyToken(id))).toBe(id);
    }
  });
});

describe('kv-state remembered revisions', () => {
  const nats = useNatsServer();

  it('never decides on a stale remembered value: no-change, throws and edits are re-checked against the server', async () => {
    const kv = await openBucket(nats.nc, 'remembered');
    const mine = createStateStore(kv, { node: 'n1', schema: Counter });
    const other = createStateStore(kv, { node: 'n1', schema: Counter });
    await mine.create('k', { n: 1 });
    await other.mutate('k', () => ({ n: 5 })); // mine still remembers n=1

    // "no change" on the remembered n=1 would be wrong: the server holds 5.
    expect(await mine.mutate('k', (c) => (c!.n === 1 ? undefined : { n: c!.n + 1 }))).toEqual({ n: 6 });
    await other.mutate('k', () => ({ n: 10 }));
    // A throw on the remembered value is retried on the fresh one.
    expect(
      await mine.mutate('k', (c) => {
        if (c!.n !== 10) throw new Error('stale');
        return { n: 11 };
      }),
    ).toEqual({ n: 11 });

    // Editing a value handed out by get() does not leak into the remembered snapshot.
    const got = await mine.get('k');
    got!.value.n = 999;
    expect(await mine.mutate('k', (c) => ({ n: c!.n + 1 }))).toEqual({ n: 12 });
    expect((await other.get('k'))?.value.n).toBe(12);
  });

  it("a list running beside this store's own writes never takes peek back to an older value", async () => {
    const kv = await openBucket(nats.nc, 'list-beside-writes');
    const s = createStateStore(kv, { node: 'n1', schema: Counter });
    for (let i = 0; i < 300; i++) await s.create(`k${i}`, { n: 0 });
    let stale = 0;
    for (let round = 1; round <= 20; round++) {
      const listing = s.list();
      for (let i = 0; i < 300; i += 30) await s.mutate(`k${i}`, () => ({ n: round }));
      await listing;
      for (let i = 0; i < 300; i += 30) if (s.peek(`k${i}`)?.value.n !== round) stale++;
    }
    expect(stale).toBe(0);
  });

  it('a read that fetched a value just before this store deleted it does not bring it back into peek', async () => {
    const real = await openBucket(nats.nc, 'read-beside-delete');
    let gate: Promise<void> | undefined;
    let fetched!: () => void;
    // A get that has its answer and is held before it returns: the delete lands meanwhile.
    const held = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop !== 'get' || !gate) return Reflect.get(target, prop, receiver);
        return async (k: string) => {
          const entry = await target.get(k);
          fetched();
          await gate;
          return entry;
        };
      },
    });
    const s = createStateStore(held, { node: 'n1', schema: Counter });
    await s.create('k', { n: 1 });
    let open!: () => void;
    gate = new Promise<void>((resolve) => (open = resolve));
    const hasFetched = new Promise<void>((resolve) => (fetched = resolve));
    const reading = s.get('k');
    await hasFetched;
    gate = undefined;
    await s.mutate('k', () => REMOVE);
    open();
    expect((await reading)?.value).toEqual({ n: 1 });
    expect(s.peek('k')).toBeUndefined();
  });

  it("a list running beside this store's deletes never brings a deleted key back into peek", async () => {
    const kv = await openBucket(nats.nc, 'list-beside-deletes');
    const s = createStateStore(kv, { node: 'n1', schema: Counter });
    let back = 0;
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 100; i++) await s.create(`r${round}k${i}`, { n: i });
      const listing = s.list();
      for (let i = 0; i < 100; i += 10) await s.mutate(`r${round}k${i}`, () => REMOVE);
      await listing;
      for (let i = 0; i < 100; i += 10) if (s.peek(`r${round}k${i}`) !== undefined) back++;
    }
    expect(back).toBe(0);
  });

  it('peek makes no request and may be stale; a write decided on it still compare-and-sets', async () => {
    const kv = await openBucket(nats.nc, 'peeked');
    const mine = createStateStore(kv, { node: 'n1', schema: Counter });
    const other = createStateStore(kv, { node: 'n1', schema: Counter });
    await mine.create('k', { n: 1 });
    await other.mutate('k', () => ({ n: 5 }));
    expect(mine.peek('k')?.value).toEqual({ n: 1 });
    expect(other.peek('k')?.value).toEqual({ n: 5 });
    // An increment decided on the stale memory lands on the server's value, not on it.
    expect(await mine.mutate('k', (c) => ({ n: c!.n + 1 }))).toEqual({ n: 6 });
    expect(mine.peek('k')?.value).toEqual({ n: 6 });
  });
});
