import { describe, expect, it } from 'vitest';
import { createNetnsSharing, type NetnsMembers } from './netns.js';
import type { ContainerRecord } from './record.js';
import { createContainerTable } from './table.js';
import { createMemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { aRecord } from '../test/records.js';

const POD_MAP = [{ containerId: 0, hostId: 300000, size: 65536 }];

function rig(
  inodes: Record<string, number> = { '/proc/10/ns/net': 4026532001, '/proc/20/ns/net': 4026532002 },
) {
  const store = createMemoryStore<NetnsMembers>();
  const records = createMemoryStore<ContainerRecord>();
  const table = createContainerTable(records, () => new Date(0));
  const host = {
    async inodeOf(path: string) {
      const inode = inodes[path];
      if (inode === undefined) throw new Error(`ENOENT: ${path}`);
      return inode;
    },
  };
  return { store, table, sharing: createNetnsSharing({ store, table, host }) };
}

/** A record as Register fills it from the request, before netns sharing. */
const registering = (id: string, netns: string, userns = '', maps: ContainerRecord['uidMappings'] = []) =>
  aRecord({ id, netns, userns, uidMappings: maps, gidMappings: maps });

describe('netns sharing', () => {
  it('two containers in one netns share the first one’s userns and ids; the last one leaving untracks', async () => {
    const { store, table, sharing } = rig();
    const a = registering('pod-a', '/proc/10/ns/net', '/proc/10/ns/user', POD_MAP);
    await sharing.onRegister(a);
    expect(a.netnsInode).toBe(4026532001);
    await table.create(a);

    const b = registering('pod-b', '/proc/10/ns/net');
    await sharing.onRegister(b);
    expect(b).toMatchObject({
      netnsInode: 4026532001,
      userns: '/proc/10/ns/user',
      uidMappings: POD_MAP,
      gidMappings: POD_MAP,
    });
    expect(store.snapshot().get('4026532001')).toEqual({ ids: ['pod-a', 'pod-b'] });

    await sharing.untrack('pod-a', a.netnsInode);
    expect(store.snapshot().get('4026532001')).toEqual({ ids: ['pod-b'] });
    await sharing.untrack('pod-a', a.netnsInode);
    await sharing.untrack('pod-b', b.netnsInode);
    expect(store.snapshot().size).toBe(0);
  });

  it('a newcomer with its own userns keeps it; other netns are separate', async () => {
    const { table, sharing } = rig();
    const a = registering('a', '/proc/10/ns/net', '/proc/10/ns/user', POD_MAP);
    await sharing.onRegister(a);
    await table.create(a);
    const own = registering('own', '/proc/10/ns/net', '/proc/1/ns/user');
    await sharing.onRegister(own);
    expect(own).toMatchObject({ userns: '/proc/1/ns/user', uidMappings: [] });
    const elsewhere = registering('elsewhere', '/proc/20/ns/net');
    await sharing.onRegister(elsewhere);
    expect(elsewhere).toMatchObject({ netnsInode: 4026532002, userns: '', uidMappings: [] });
  });

  it('tracking twice keeps one entry; no netns tracks nothing; inode 0 untracks nothing', async () => {
    const { store, sharing } = rig();
    expect(await sharing.track('a', 7)).toEqual(['a']);
    expect(await sharing.track('a', 7)).toEqual(['a']);
    const none = registering('none', '');
    await sharing.onRegister(none);
    expect(none.netnsInode).toBe(0);
    await sharing.untrack('a', 0);
    expect([...store.snapshot()]).toEqual([['7', { ids: ['a'] }]]);
  });

  it('refuses to share a netns whose first member has no record, and a netns path without an inode', async () => {
    const { store, sharing } = rig();
    await store.create('4026532001', { ids: ['ghost'] });
    await expect(sharing.onRegister(registering('b', '/proc/10/ns/net'))).rejects.toMatchObject({
      code: 'failed-precondition',
      message: expect.stringMatching(/container b shares net-ns with other containers/),
    });
    await expect(sharing.onRegister(registering('c', '/proc/99/ns/net'))).rejects.toMatchObject({
      code: 'invalid-request',
      message: expect.stringMatching(/container c: unable to get inode for netns \/proc\/99\/ns\/net/),
    });
  });

  it('Update joins the netns of a container registered without one, and never moves one that has it', async () => {
    const { store, sharing } = rig();
    const rec = registering('u', '');
    await sharing.onUpdate(rec, '/proc/10/ns/net');
    expect(rec).toMatchObject({ netns: '/proc/10/ns/net', netnsInode: 4026532001 });
    await sharing.onUpdate(rec, '/proc/20/ns/net');
    expect(rec).toMatchObject({ netns: '/proc/10/ns/net', netnsInode: 4026532001 });
    expect([...store.snapshot().keys()]).toEqual(['4026532001']);
  });
});
