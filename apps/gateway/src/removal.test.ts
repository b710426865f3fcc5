import { describe, expect, it } from 'vitest';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { createNetnsSharing, type NetnsMembers } from './netns.js';
import type { ContainerRecord } from './record.js';
import { createRemoval } from './removal.js';
import { serviceCaller } from './service-call.js';
import { createContainerTable } from './table.js';
import { fakeClient, type FakeHandler } from '../test/fake-client.js';
import { createMemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { aRecord } from '../test/records.js';

const MARK = { source: '/lib/modules', readonly: true };

/** A stopped container that holds one of everything. */
const holdingAll = (over: Partial<ContainerRecord> = {}) =>
  aRecord({
    id: 'c1',
    state: 'stopped',
    netnsInode: 4026532001,
    subidAllocated: true,
    rootfsCloned: true,
    mountsPrepped: true,
    volumeKinds: ['docker', 'kubelet'],
    shiftfsMarks: [MARK],
    ...over,
  });

function rig(rec: ContainerRecord | undefined, handlers: Record<string, FakeHandler> = {}) {
  const client = fakeClient(handlers);
  const store = createMemoryStore<ContainerRecord>({ initial: rec ? { [rec.id]: rec } : {} });
  const netnsStore = createMemoryStore<NetnsMembers>({ initial: { '4026532001': { ids: ['c1', 'other'] } } });
  const table = createContainerTable(store, () => new Date(0));
  const watches: [string, string | undefined][] = [];
  const remove = createRemoval({
    table,
    call: serviceCaller(client, { opMs: 100, longOpMs: 1000 }),
    netns: createNetnsSharing({ store: netnsStore, table, host: { inodeOf: async () => 0 } }),
    log: silentLogger(),
  });
  table.onWatchChange((id, path) => void watches.push([id, path]));
  return { client, store, netnsStore, remove, watches };
}

const ALL_STEPS = [
  'vol.docker-destroy',
  'vol.kubelet-destroy',
  'subid.free',
  'rootfs.remove-clone',
  'vol.revert-prep',
  'shiftfs.unmark',
];

describe('removal', () => {
  it('releases everything a stopped container holds, leaves its netns and forgets it', async () => {
    const { client, store, netnsStore, remove, watches } = rig(holdingAll());
    expect(await remove('c1')).toBe(true);
    expect(client.ops()).toEqual(ALL_STEPS);
    expect(client.calls.at(-1)!.req).toEqual({ id: 'c1', mounts: [MARK] });
    expect(store.snapshot().size).toBe(0);
    expect(netnsStore.snapshot().get('4026532001')).toEqual({ ids: ['other'] });
    expect(watches).toEqual([['c1', undefined]]);
  });

  it('takes not-found as done', async () => {
    const gone = () => {
      throw new SysboxError('not-found', 'never made');
    };
    const { store, remove } = rig(holdingAll(), {
      'subid.free': gone,
      'rootfs.remove-clone': gone,
      'vol.docker-destroy': gone,
    });
    expect(await remove('c1')).toBe(true);
    expect(store.snapshot().size).toBe(0);
  });

  it('tries every step when one fails, and keeps the record for the retry', async () => {
    const { client, store, remove, watches } = rig(holdingAll(), {
      'vol.docker-destroy': () => {
        throw new SysboxError('unavailable', 'vol-mgr restarting');
      },
      'rootfs.remove-clone': () => {
        throw new SysboxError('internal', 'busy');
      },
    });
    await expect(remove('c1')).rejects.toMatchObject({
      code: 'unavailable',
      message: 'container c1: removal incomplete (destroy of the docker volume, clone removal); will retry',
    });
    expect(client.ops()).toEqual(ALL_STEPS);
    expect(store.snapshot().get('c1')?.state).toBe('stopped');
    expect(watches).toEqual([]);
  });

  it('runs the release steps at once, not one after another', async () => {
    // The docker volume's destroy (the first step) answers only once the clone removal (a later
    // one) has been asked for: one step at a time, it would wait for it until its bound.
    let cloneAsked!: () => void;
    const cloneRemovalAsked = new Promise<void>((resolve) => (cloneAsked = resolve));
    const { client, remove } = rig(holdingAll(), {
      'vol.docker-destroy': async () => {
        await Promise.race([
          cloneRemovalAsked,
          new Promise((_, reject) =>
            setTimeout(() => reject(new SysboxError('timeout', 'clone removal never asked')), 2000),
          ),
        ]);
        return {};
      },
      'rootfs.remove-clone': () => {
        cloneAsked();
        return {};
      },
    });
    expect(await remove('c1')).toBe(true);
    expect(client.ops()).toEqual(ALL_STEPS);
  });

  it('releases what was requested but never confirmed (intents), and only the subid range by id otherwise', async () => {
    const rec = aRecord({
      id: 'c1',
      state: 'stopped',
      requested: { clone: true, shiftfs: [MARK] },
    });
    const { client, remove } = rig(rec);
    expect(await remove('c1')).toBe(true);
    expect(client.ops()).toEqual(['subid.free', 'rootfs.remove-clone', 'shiftfs.unmark']);

    const bare = rig(aRecord({ id: 'c2', state: 'stopped' }));
    expect(await bare.remove('c2')).toBe(true);
    // A range allocated by an unanswered SubidAlloc is keyed by the id: freed whatever the record says.
    expect(bare.client.ops()).toEqual(['subid.free']);
  });

  it('leaves an unknown or running container alone', async () => {
    const running = rig(holdingAll({ state: 'started' }));
    expect(await running.remove('c1')).toBe(false);
    expect(running.client.calls).toEqual([]);
    expect(running.store.snapshot().has('c1')).toBe(true);
    expect(await rig(undefined).remove('c1')).toBe(false);
  });
});
