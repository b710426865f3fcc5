/**
 * The vol service end to end as root: real overlay rootfs, real rsync, a real nats-server with
 * JetStream for state, requests through the NATS client: hostile ids, paths and offsets, and forged KV records, change nothing on the host.
 */
import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { volByKind, volList, volPrep, volService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { describe, expect, it } from 'vitest';
import { VolumeRecord } from './volumes.js';
import { snapshotTree } from '../test/tree.js';
import { OFFSET, expectCode, listAll, useVolMgrRig } from '../test/vol-mgr-rig.js';
describe('vol-mgr on a real nats-server with real mounts (root)', () => {
  const rig = useVolMgrRig();
  const { nats, start } = rig;

  it('answers hostile ids and paths with typed errors and creates nothing outside the data root', async () => {
    await start();
    const docker = volByKind.docker;
    const rootfs = await mkdtemp(join(rig.base, 'hostile-'));
    const outside = await mkdtemp(join(tmpdir(), 'volmgr-outside-'));
    try {
      await writeFile(join(outside, 'secret'), 'host secret');
      await mkdir(join(rootfs, 'var/lib'), { recursive: true });
      // The image plants /var/lib/docker as a symlink to a host dir.
      await symlink(outside, join(rootfs, 'var/lib/docker'));
      const before = await listAll(rig.base);
      const good = { rootfs, mountpoint: '/var/lib/docker', uid: OFFSET, gid: OFFSET, chownOnSync: true };
      for (const id of ['..', '.', '../escape', 'a/b', '', 'x'.repeat(129), 'nul\u0000']) {
        await expectCode(rig.client.call(docker.create, { ...good, id }), 'invalid-request');
      }
      for (const bad of [
        { rootfs: '/tmp/../etc' },
        { rootfs: 'relative/dir' },
        { mountpoint: 'var/lib/docker' },
        { mountpoint: '/var/lib/../../../etc' },
        { uid: -1 },
        { uid: 2 ** 32 },
      ]) {
        await expectCode(
          rig.client.call(docker.create, { ...good, id: 'h1', ...bad } as never),
          'invalid-request',
        );
      }
      await expectCode(
        rig.client.call(docker.create, { ...good, id: 'h2', rootfs: join(rig.base, 'no-such-rootfs') }),
        'invalid-request',
      );
      const prepOf = (source: string) =>
        rig.client.call(volPrep, {
          id: 'h1',
          uid: OFFSET,
          gid: OFFSET,
          sources: [{ source, exclusive: false }],
        });
      await expectCode(prepOf('/'), 'invalid-request');
      await expectCode(prepOf(rig.base), 'invalid-request');
      await expectCode(prepOf(join(rig.base, 'nope')), 'not-found');
      expect(await listAll(rig.base)).toEqual(before);
      expect((await rig.client.call(volList, {})).volumes).toEqual([]);

      // The planted symlink is followed within the rootfs, as the container sees it: the host dir
      // it names is never read (its secret is not synced in).
      await rig.client.call(docker.create, { ...good, id: 'h1' });
      expect(await readdir(join(rig.data, 'docker/h1'))).toEqual([]);
      await rig.client.call(docker.destroy, { id: 'h1' });

      // A container that swaps its sync-out target for a symlink cannot make us write through it.
      await rm(join(rootfs, 'var/lib/docker'));
      await rig.client.call(docker.create, { ...good, id: 'h3' });
      await writeFile(join(rig.data, 'docker/h3/file'), 'x');
      await symlink(outside, join(rootfs, 'var/lib/docker'));
      await expectCode(rig.client.call(docker.syncOut, { id: 'h3' }), 'invalid-request');
      expect(await readdir(outside)).toEqual(['secret']);
      expect((await stat(join(outside, 'secret'))).uid).toBe(0);
      await rig.client.call(docker.destroy, { id: 'h3' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  // Issue #24: an image that links an inner store's mountpoint elsewhere (/var/lib/docker ->
  // /data/docker) made create fail. sysbox-runc mounts the volume where the link leads within the

  it('refuses preps and creates that would turn it against the host, and changes nothing', async () => {
    await start();
    const docker = volByKind.docker;
    // A root-owned tree with setuid and private modes: what a host dir looks like.
    const decoy = await mkdtemp(join(rig.base, 'decoy-'));
    await mkdir(join(decoy, 'ssh'), { mode: 0o700 });
    await writeFile(join(decoy, 'ssh/key'), 'secret', { mode: 0o600 });
    await writeFile(join(decoy, 'tool'), '#!/bin/sh\n');
    await chmod(join(decoy, 'tool'), 0o4755);
    const decoySnapshot = await snapshotTree(decoy);
    const outside = await mkdtemp(join(tmpdir(), 'volmgr-not-a-rootfs-'));
    try {
      await mkdir(join(outside, 'var/lib/docker'), { recursive: true });
      const before = await listAll(rig.base);
      for (const ids of [
        { uid: 0, gid: 0 },
        { uid: 1000, gid: 1000 },
        { uid: OFFSET, gid: 0 },
        { uid: OFFSET + 15 * 65536 + 1, gid: OFFSET },
      ]) {
        await expectCode(
          rig.client.call(volPrep, { id: 'h1', ...ids, sources: [{ source: decoy, exclusive: false }] }),
          'invalid-request',
        );
      }
      for (const source of ['/etc', '/usr', '/lib', '/proc/self']) {
        await expectCode(
          rig.client.call(volPrep, {
            id: 'h1',
            uid: OFFSET,
            gid: OFFSET,
            sources: [{ source, exclusive: false }],
          }),
          'invalid-request',
        );
      }
      const good = { mountpoint: '/var/lib/docker', uid: OFFSET, gid: OFFSET, chownOnSync: true };
      await expectCode(
        rig.client.call(docker.create, { ...good, id: 'h1', rootfs: outside }),
        'invalid-request',
      );
      await expectCode(
        rig.client.call(docker.create, { ...good, id: 'h1', rootfs: '/etc' }),
        'invalid-request',
      );
      await expectCode(
        rig.client.call(docker.create, { ...good, id: 'h1', rootfs: decoy, uid: 1000, gid: 1000 }),
        'invalid-request',
      );
      await expectCode(
        rig.client.call(docker.create, { ...good, id: 'h1', rootfs: decoy, uid: 0, gid: 0 }),
        'invalid-request',
      );
      expect(await snapshotTree(decoy)).toEqual(decoySnapshot);
      expect(await listAll(rig.base)).toEqual(before);
      expect(await rig.client.call(volList, {})).toEqual({ volumes: [], preps: [] });
      // A root-owned volume without a sync shift is upstream's volume for an ID-mapped rootfs.
      await rig.client.call(docker.create, {
        ...good,
        id: 'idmapped',
        rootfs: decoy,
        uid: 0,
        gid: 0,
        chownOnSync: false,
      });
      await rig.client.call(docker.destroy, { id: 'idmapped' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('never takes a path from a forged KV record: destroy, sync-out and list use the derived ones', async () => {
    await start();
    const docker = volByKind.docker;
    const decoy = await mkdtemp(join(rig.base, 'decoy-'));
    await writeFile(join(decoy, 'keep'), 'host data');
    const outside = await mkdtemp(join(tmpdir(), 'volmgr-outside-'));
    try {
      const rootfs = await mkdtemp(join(rig.base, 'rootfs-'));
      const store = createStateStore(await openBucket(nats.nc, volService.bucket), {
        node: `t${rig.testNo}`,
        namespace: 'docker',
        schema: VolumeRecord,
      });
      const record = (id: string, over: Partial<VolumeRecord>): VolumeRecord => ({
        kind: 'docker',
        id,
        path: join(rig.data, 'docker', id),
        rootfs,
        mountpoint: '/var/lib/docker',
        syncOutBase: rootfs,
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: false,
        perm: 0o700,
        createdAt: new Date().toISOString(),
        state: 'ready',
        ...over,
      });
      await store.create('f1', record('f1', { path: decoy }));
      await expectCode(rig.client.call(docker.destroy, { id: 'f1' }), 'internal');
      await expectCode(rig.client.call(docker.syncOut, { id: 'f1' }), 'internal');
      expect(await readdir(decoy)).toEqual(['keep']);
      expect((await rig.client.call(volList, { kind: 'docker' })).volumes[0]?.path).toBe(
        join(rig.data, 'docker/f1'),
      );

      // The right path, but a sync-out base outside every rootfs root, or a host user as owner.
      await rig.client.call(docker.create, {
        id: 'f2',
        rootfs,
        mountpoint: '/var/lib/docker',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: false,
      });
      await writeFile(join(rig.data, 'docker/f2/planted'), 'x');
      await store.mutate('f2', (cur) => cur && { ...cur, syncOutBase: outside, rootfs: outside });
      await expectCode(rig.client.call(docker.syncOut, { id: 'f2' }), 'invalid-request');
      await store.mutate(
        'f2',
        (cur) => cur && { ...cur, syncOutBase: rootfs, rootfs, uid: 0, gid: 0, chownOnSync: true },
      );
      await expectCode(rig.client.call(docker.syncOut, { id: 'f2' }), 'invalid-request');
      expect(await readdir(outside)).toEqual([]);
      expect(await readdir(rootfs)).toEqual([]);
      await rig.client.call(docker.destroy, { id: 'f2' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});
