/**
 * The vol service end to end as root: real overlay rootfs, real rsync, a real nats-server with
 * JetStream for state, requests through the NATS client: sync-in at create, sync-out back into the rootfs (through a restart, with --no-sync, through a symlinked mountpoint), and the time bounds of a copy.
 */
import {
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
  chown,
} from 'node:fs/promises';
import { join } from 'node:path';
import { VOLUME_KINDS, volByKind, volList, volSummary } from '@sysbox-mgr-ts/contracts';
import { describe, expect, it, vi } from 'vitest';
import { createMetricsRegistry } from '@sysbox-mgr-ts/metrics/prometheus';
import { parseExposition } from '@sysbox-mgr-ts/metrics/testing';
import { makeOverlayRootfs, snapshotTree } from '../test/tree.js';
import { OFFSET, expectCode, fillDockerStore, useVolMgrRig } from '../test/vol-mgr-rig.js';
describe('vol-mgr on a real nats-server with real mounts (root)', () => {
  const rig = useVolMgrRig();
  const { rootfses, start, stopApp } = rig;

  it('creates with chownOnSync, survives a restart, syncs out into the overlay upper dir shifted back, destroys', async () => {
    const rootfs = await makeOverlayRootfs('volmgr-ovl-', fillDockerStore, rig.base);
    rootfses.push(rootfs);
    const firstMetrics = createMetricsRegistry();
    const first = await start({}, undefined, firstMetrics);
    const docker = volByKind.docker;

    const createReq = {
      id: 'c1',
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: true,
    };
    const created = await rig.client.call(docker.create, createReq);
    const volPath = join(rig.data, 'docker/c1');
    expect(created.mounts).toEqual([
      { source: volPath, destination: '/var/lib/docker', type: 'bind', options: ['rbind', 'rprivate'] },
    ]);
    const imageTree = await snapshotTree(join(rootfs.lower, 'var/lib/docker'));
    // The copy holds exactly the image's tree, every owner shifted up by the offset.
    expect(await snapshotTree(volPath, OFFSET)).toEqual(imageTree);
    expect((await stat(join(volPath, 'engine-id'))).uid).toBe(OFFSET);
    expect((await stat(join(volPath, 'volumes/owned-by-user'))).gid).toBe(OFFSET + 1001);
    // Issue #28: the sync-in is timed with the entries its id scan saw, the volume counted by kind.
    const afterCreate = parseExposition(await firstMetrics.text());
    expect(afterCreate.sum('sysbox_rsync_duration_seconds_count', { op: 'sync-in' })).toBe(1);
    expect(afterCreate.sum('sysbox_rsync_entries_total', { op: 'sync-in' })).toBeGreaterThan(0);
    expect(afterCreate.sum('sysbox_volumes', { app: 'vol-mgr', kind: 'docker' })).toBe(1);
    expect(afterCreate.sum('sysbox_volumes', { kind: 'kubelet' })).toBe(0);
    // The same create again (an answer lost in a reconnect) gets the same answer; another one is refused.
    expect((await rig.client.call(docker.create, createReq)).mounts).toEqual(created.mounts);
    await expectCode(
      rig.client.call(docker.create, { ...createReq, mountpoint: '/var/lib/docker2' }),
      'already-exists',
    );

    // The container writes more, as its own users.
    await mkdir(join(volPath, 'containers/abc'), { recursive: true });
    await writeFile(join(volPath, 'containers/abc/config.json'), '{"x":1}');
    await chown(join(volPath, 'containers/abc/config.json'), OFFSET + 33, OFFSET + 44);
    await chown(join(volPath, 'containers/abc'), OFFSET, OFFSET);
    await chown(join(volPath, 'containers'), OFFSET, OFFSET);
    await link(join(volPath, 'containers/abc/config.json'), join(volPath, 'containers/abc/config.hard'));
    await symlink('../../engine-id', join(volPath, 'containers/abc/engine'));
    await rm(join(volPath, 'repos-link'));
    const volTree = await snapshotTree(volPath, OFFSET);

    // A restart of the daemon between create and sync-out forgets nothing.
    await stopApp(first);
    const secondMetrics = createMetricsRegistry();
    const second = await start({}, undefined, secondMetrics);
    expect(second.reconciled.find((r) => r.kind === 'docker')?.kept).toEqual(['c1']);
    const listed = await rig.client.call(volList, { kind: 'docker' });
    expect(listed.volumes).toHaveLength(1);
    expect(listed.volumes[0]).toMatchObject({
      id: 'c1',
      path: volPath,
      syncOutTarget: join(rootfs.upper, 'var/lib/docker'),
      uid: OFFSET,
    });
    expect(listed.volumes[0]!.sizeBytes).toBeGreaterThan(0);
    // The counts a fleet inventory reads: every kind, from the stores' keys.
    expect(await rig.client.call(volSummary, {})).toEqual({
      volumes: { ...Object.fromEntries(VOLUME_KINDS.map((k) => [k, 0])), docker: 1 },
      preps: 0,
    });

    await rig.client.call(docker.syncOut, { id: 'c1' });
    expect(
      parseExposition(await secondMetrics.text()).sum('sysbox_rsync_duration_seconds_count', {
        op: 'sync-out',
      }),
    ).toBe(1);
    const target = join(rootfs.upper, 'var/lib/docker');
    // Content, modes, owners (back to root and 1000:1001), symlinks and hard links match exactly.
    expect(await snapshotTree(target)).toEqual(volTree);
    expect((await stat(join(target, 'containers/abc/config.json'))).uid).toBe(33);
    expect((await stat(join(target, 'engine-id'))).uid).toBe(0);
    // Parents made in the upper layer keep the lower layer's modes, so they mask nothing.
    expect((await stat(join(rootfs.upper, 'var'))).mode & 0o7777).toBe(0o755);

    await rig.client.call(docker.destroy, { id: 'c1' });
    await expect(stat(volPath)).rejects.toThrow(/ENOENT/);
    expect((await rig.client.call(volList, {})).volumes).toEqual([]);
    expect((await rig.client.call(volSummary, {})).volumes.docker).toBe(0);
    await expectCode(rig.client.call(docker.destroy, { id: 'c1' }), 'not-found');
    await expectCode(rig.client.call(docker.syncOut, { id: 'c1' }), 'not-found');
  });

  it('--no-sync (upstream disable-inner-image-preload) still syncs the image in, and never back out', async () => {
    const rootfs = await makeOverlayRootfs('volmgr-nosync-', fillDockerStore, rig.base);
    rootfses.push(rootfs);
    await start({ sync: false });
    const docker = volByKind.docker;
    await rig.client.call(docker.create, {
      id: 'n1',
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: true,
    });
    const volPath = join(rig.data, 'docker/n1');
    expect(await snapshotTree(volPath, OFFSET)).toEqual(
      await snapshotTree(join(rootfs.lower, 'var/lib/docker')),
    );
    await writeFile(join(volPath, 'pulled'), 'an image the inner docker pulled');
    await rig.client.call(docker.syncOut, { id: 'n1' });
    await expect(stat(join(rootfs.upper, 'var/lib/docker', 'pulled'))).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('ends a sync-out promptly and without error when the target is removed mid-copy; bounds every copy in time', async () => {
    const rootfs = await makeOverlayRootfs(
      'volmgr-ovl-',
      async (lower) => {
        await mkdir(join(lower, 'var/lib'), { recursive: true });
      },
      rig.base,
    );
    rootfses.push(rootfs);
    // 1 MB/s: the 8 MB file below would take 8 s to copy.
    await start({ syncTimeoutMs: 2500 }, ['--bwlimit=1000']);
    const docker = volByKind.docker;
    const { mounts } = await rig.client.call(docker.create, {
      id: 'slow',
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: true,
    });
    await writeFile(join(mounts[0]!.source, 'big.layer'), Buffer.alloc(8 * 1024 * 1024, 7));

    const target = join(rootfs.upper, 'var/lib/docker');
    const syncing = rig.client.call(docker.syncOut, { id: 'slow' });
    // The copy is under way once rsync wrote its first (temporary) file into the target.
    await vi.waitFor(async () => expect((await readdir(target).catch(() => [])).length).toBeGreaterThan(0), {
      timeout: 10_000,
      interval: 20,
    });
    await rm(join(rootfs.upper, 'var'), { recursive: true, force: true });
    // An answer, not the typed timeout the 2.5 s bound would give: the vanished target ended the copy.
    await expect(syncing).resolves.toEqual({});

    // Left alone, the same copy runs into its time bound: a typed timeout, and rsync is gone.
    await expectCode(rig.client.call(docker.syncOut, { id: 'slow' }), 'timeout');
    const ps = await import('@sysbox-mgr-ts/exec').then(({ run }) =>
      run('ps', ['-eo', 'args'], { timeout: 5000 }),
    );
    expect(
      ps.stdout.split('\n').filter((l) => l.startsWith('rsync') && l.includes(mounts[0]!.source)),
    ).toEqual([]);
  });

  // Issue #24: ReqMounts' sync-in was cut at --sync-timeout-ms (30 min) where sysbox-runc waits
  // as long as it takes; the gateway now hands each copy the limit of the RPC it serves.
  it("bounds a copy by the caller's timeLimit, else by --sync-timeout-ms", async () => {
    const size = 3 * 1024 * 1024;
    const rootfs = await makeOverlayRootfs(
      'volmgr-ovl-',
      async (lower) => {
        await mkdir(join(lower, 'var/lib/docker'), { recursive: true });
        await writeFile(join(lower, 'var/lib/docker/layer'), Buffer.alloc(size, 7));
      },
      rig.base,
    );
    rootfses.push(rootfs);
    // 1 MB/s: the 3 MB layer takes 3 s to copy, past the 1 s --sync-timeout-ms.
    await start({ syncTimeoutMs: 1000 }, ['--bwlimit=1000']);
    const docker = volByKind.docker;
    const req = {
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: false,
    };
    await expectCode(rig.client.call(docker.create, { ...req, id: 'cut' }), 'timeout');
    const { mounts } = await rig.client.call(docker.create, { ...req, id: 'whole', timeLimit: 'unbounded' });
    expect((await stat(join(mounts[0]!.source, 'layer'))).size).toBe(size);
    await rm(join(rootfs.upper, 'var'), { recursive: true, force: true });
    await expectCode(rig.client.call(docker.syncOut, { id: 'whole' }), 'timeout');
    await rig.client.call(docker.syncOut, { id: 'whole', timeLimit: 60_000 });
    expect((await stat(join(rootfs.upper, 'var/lib/docker/layer'))).size).toBe(size);
  });

  it.each([
    ['absolute', '/data/docker'],
    ['relative', '../../data/docker'],
  ])(
    'follows an %s symlink in the mountpoint within the rootfs, for sync-in and sync-out',
    async (_k, link) => {
      await start();
      const docker = volByKind.docker;
      const rootfs = await mkdtemp(join(rig.base, 'linked-'));
      await mkdir(join(rootfs, 'var/lib'), { recursive: true });
      await mkdir(join(rootfs, 'data/docker/image'), { recursive: true });
      await writeFile(join(rootfs, 'data/docker/image/repositories.json'), '{"busybox":1}');
      await symlink(link, join(rootfs, 'var/lib/docker'));
      const id = `ln-${link.startsWith('/') ? 'abs' : 'rel'}`;
      const reply = await rig.client.call(docker.create, {
        id,
        rootfs,
        mountpoint: '/var/lib/docker',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: true,
      });
      expect(reply.mounts[0]).toMatchObject({
        source: join(rig.data, 'docker', id),
        destination: '/var/lib/docker',
      });
      const inVol = join(rig.data, 'docker', id, 'image/repositories.json');
      expect(await readFile(inVol, 'utf8')).toBe('{"busybox":1}');
      expect((await stat(inVol)).uid).toBe(OFFSET);
      await writeFile(join(rig.data, 'docker', id, 'pulled'), 'by the container');
      await rig.client.call(docker.syncOut, { id });
      expect(await readFile(join(rootfs, 'data/docker/pulled'), 'utf8')).toBe('by the container');
      expect((await lstat(join(rootfs, 'var/lib/docker'))).isSymbolicLink()).toBe(true);
      await rig.client.call(docker.destroy, { id });
    },
  );
});
