import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from '@nats-io/nats-core';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { createKeyedLock } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { createContainerTable } from './table.js';
import { ContainerRecord } from './record.js';
import { createMemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { aRecord } from '../test/records.js';

const clock = () => new Date('2026-02-03T04:05:06.000Z');

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('per-container lock', () => {
  it('runs operations on one id one at a time, in order, even when one fails', async () => {
    const lock = createKeyedLock();
    const events: string[] = [];
    const gate = deferred();
    const first = lock('a', async () => {
      events.push('first start');
      await gate.promise;
      events.push('first end');
      throw new Error('first failed');
    });
    const second = lock('a', async () => {
      events.push('second');
      return 2;
    });
    await new Promise((r) => setTimeout(r, 5));
    expect(events).toEqual(['first start']);
    gate.resolve();
    await expect(first).rejects.toThrow('first failed');
    expect(await second).toBe(2);
    expect(events).toEqual(['first start', 'first end', 'second']);
  });

  it('does not make one id wait for another', async () => {
    const lock = createKeyedLock();
    const gate = deferred();
    const slow = lock('a', () => gate.promise);
    expect(await lock('b', async () => 'b done')).toBe('b done');
    gate.resolve();
    await slow;
  });
});

describe('container table', () => {
  it('saves a record stamped with the clock while its state is the expected one', async () => {
    const store = createMemoryStore<ContainerRecord>();
    const table = createContainerTable(store, clock);
    await table.create(aRecord({ id: 'c1' }));
    const rec = await table.mustGet('c1', 'gone');
    rec.volumeKinds = ['docker'];
    await table.save(rec);
    expect(await table.get('c1')).toMatchObject({
      volumeKinds: ['docker'],
      updatedAt: '2026-02-03T04:05:06.000Z',
    });
    // Changing the state: saved against the state it started from.
    rec.state = 'stopped';
    await table.save(rec, 'started');
    expect((await table.get('c1'))?.state).toBe('stopped');
  });

  it('refuses to save over a state someone else changed, or over a removed record', async () => {
    const store = createMemoryStore<ContainerRecord>({ initial: { c1: aRecord({ id: 'c1' }) } });
    const table = createContainerTable(store, clock);
    const mine = (await table.get('c1'))!;
    await store.mutate('c1', (cur) => ({ ...cur!, state: 'stopped' }));
    mine.volumeKinds = ['k3s'];
    await expect(table.save(mine)).rejects.toMatchObject({
      code: 'failed-precondition',
      message: expect.stringMatching(/changed state to stopped/),
    });
    expect(store.snapshot().get('c1')?.volumeKinds).toEqual([]);
    await store.delete('c1');
    await expect(table.save(mine)).rejects.toMatchObject({ code: 'not-found' });
    expect(store.snapshot().has('c1')).toBe(false);
  });

  it("mustGet answers not-found with the caller's message; create refuses a second record", async () => {
    const table = createContainerTable(createMemoryStore<ContainerRecord>(), clock);
    await expect(table.mustGet('nope', 'container nope is not registered')).rejects.toMatchObject({
      code: 'not-found',
      message: 'container nope is not registered',
    });
    await table.create(aRecord({ id: 'c1' }));
    await expect(table.create(aRecord({ id: 'c1' }))).rejects.toMatchObject({ code: 'already-exists' });
  });

  it('records an intent before the call it announces', async () => {
    const store = createMemoryStore<ContainerRecord>({ initial: { c1: aRecord({ id: 'c1' }) } });
    const table = createContainerTable(store, clock);
    const rec = (await table.get('c1'))!;
    await table.recordIntent(rec, (r) => (r.clone = true));
    expect(store.snapshot().get('c1')?.requested).toEqual({ clone: true, shiftfs: [] });
  });

  it('holds a subid range without writing it: reads show it, the next save writes it, a removal or a new record of the id drops it', async () => {
    const bare = (): ContainerRecord => aRecord({ id: 'c1', uidMappings: [], gidMappings: [] });
    const store = createMemoryStore<ContainerRecord>({ initial: { c1: bare() } });
    const table = createContainerTable(store, clock);
    table.holdSubidRange('c1', { uid: 231072, gid: 296608, size: 65536 });
    expect(store.snapshot().get('c1')).toMatchObject({ subidAllocated: false, uidMappings: [] });
    const held = {
      subidAllocated: true,
      uidMappings: [{ containerId: 0, hostId: 231072, size: 65536 }],
      gidMappings: [{ containerId: 0, hostId: 296608, size: 65536 }],
    };
    expect(await table.get('c1')).toMatchObject(held);
    expect((await table.list())[0]).toMatchObject(held);
    const rec = (await table.mustGet('c1', 'gone'))!;
    rec.volumeKinds = ['docker'];
    await table.save(rec);
    expect(store.snapshot().get('c1')).toMatchObject({ ...held, volumeKinds: ['docker'] });

    // Held, then the container stopped and was removed: a new container of that id starts bare.
    await store.mutate('c1', (cur) => ({
      ...cur!,
      state: 'stopped',
      subidAllocated: false,
      uidMappings: [],
      gidMappings: [],
    }));
    table.holdSubidRange('c1', { uid: 1, gid: 1, size: 1 });
    await table.removeIfStopped('c1');
    await table.create(bare());
    expect(await table.get('c1')).toMatchObject({ subidAllocated: false, uidMappings: [] });
    table.holdSubidRange('c1', { uid: 1, gid: 1, size: 1 });
    await store.delete('c1');
    await table.create(bare());
    expect(await table.get('c1')).toMatchObject({ subidAllocated: false, uidMappings: [] });
  });

  it('removes a record only while it is stopped, and lists what it holds', async () => {
    const store = createMemoryStore<ContainerRecord>({
      initial: { run: aRecord({ id: 'run' }), stop: aRecord({ id: 'stop', state: 'stopped' }) },
    });
    const table = createContainerTable(store, clock);
    expect((await table.list()).map((r) => r.id)).toEqual(['run', 'stop']);
    await table.removeIfStopped('run');
    await table.removeIfStopped('stop');
    await table.removeIfStopped('never');
    expect([...store.snapshot().keys()]).toEqual(['run']);
  });
});

describe('memory store', () => {
  it('hands out copies, and mutate answers what is stored', async () => {
    const store = createMemoryStore<{ n: number[] }>();
    await store.create('k', { n: [1] });
    (await store.get('k'))!.value.n.push(2);
    expect((await store.get('k'))!.value).toEqual({ n: [1] });
    expect(await store.mutate('k', (cur) => ({ n: [...cur!.n, 3] }))).toEqual({ n: [1, 3] });
    expect(await store.mutate('k', () => undefined)).toEqual({ n: [1, 3] });
    expect(await store.mutate('absent', () => undefined)).toBeUndefined();
  });
});

describe('container table on JetStream KV', () => {
  let ns: NatsServer;
  let nc: NatsConnection;
  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true });
    nc = await ns.connect();
  });
  afterAll(async () => {
    await nc?.close();
    await ns?.stop();
  });

  it("reads a record it wrote from memory, and catches another gateway's change when it saves", async () => {
    const kv = await openBucket(nc, 'table-memory');
    const opts = { node: 'n1', namespace: 'containers', schema: ContainerRecord };
    const store = createStateStore(kv, opts);
    let reads = 0;
    const table = createContainerTable({ ...store, get: (k) => (reads++, store.get(k)) }, clock);
    await table.create(aRecord({ id: 'c1' }));
    const rec = await table.mustGet('c1', 'gone');
    rec.volumeKinds = ['docker'];
    await table.save(rec);
    expect((await table.get('c1'))?.volumeKinds).toEqual(['docker']);
    expect(reads).toBe(0);

    // Another gateway of the node (its orphan collector) stops the container meanwhile.
    const other = createStateStore(kv, opts);
    await other.mutate('c1', (cur) => ({ ...cur!, state: 'stopped' }));
    const stale = (await table.get('c1'))!;
    expect(stale.state).toBe('started');
    stale.volumeKinds = ['k3s'];
    await expect(table.save(stale)).rejects.toMatchObject({ code: 'failed-precondition' });
    expect((await other.get('c1'))?.value).toMatchObject({ state: 'stopped', volumeKinds: ['docker'] });
    // The refused write read the record afresh: memory now holds the other gateway's change.
    expect((await table.get('c1'))?.state).toBe('stopped');
  });
});

describe('the removal watch follows the table', () => {
  it('a save that stops a container starts its watch; one out of stopped, or a removal, ends it; others say nothing', async () => {
    const store = createMemoryStore<ContainerRecord>();
    const table = createContainerTable(store, clock);
    const watches: [string, string | undefined][] = [];
    table.onWatchChange((id, path) => void watches.push([id, path]));
    const rec = aRecord({ id: 'c1' });
    await table.create(rec);
    await table.save({ ...rec, userns: '/u' });
    expect(watches).toEqual([]);
    await table.save({ ...rec, state: 'stopped' }, 'started');
    expect(watches).toEqual([['c1', rec.rmWatchPath]]);
    await table.save({ ...rec, state: 'restarted' }, 'stopped');
    expect(watches).toEqual([
      ['c1', rec.rmWatchPath],
      ['c1', undefined],
    ]);
    await table.save({ ...rec, state: 'stopped', rmWatchPath: '/ovl/work' }, 'restarted');
    await table.removeIfStopped('c1');
    expect(watches.slice(2)).toEqual([
      ['c1', '/ovl/work'],
      ['c1', undefined],
    ]);
    // A failed save (the state moved meanwhile) starts nothing.
    await table.create(rec);
    await expect(table.save({ ...rec, state: 'stopped' }, 'restarted')).rejects.toMatchObject({
      code: 'failed-precondition',
    });
    expect(watches).toHaveLength(4);
  });
});
