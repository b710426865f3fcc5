/**
 * The vol service end to end as root: real overlay rootfs, real rsync, a real nats-server with
 * JetStream for state, requests through the NATS client: the data root's layout per kind, and what a start makes of the volume dirs it finds.
 */
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { VOLUME_KINDS, VOLUME_LAYOUT, volByKind, volList } from '@sysbox-mgr-ts/contracts';
import { describe, expect, it } from 'vitest';
import { OFFSET, useVolMgrRig } from '../test/vol-mgr-rig.js';
describe('vol-mgr on a real nats-server with real mounts (root)', () => {
  const rig = useVolMgrRig();
  const { capture, start, stopApp } = rig;

  it('lays out every kind with its host dir (0700, as upstream) and each volume with its perm; sync-out-and-destroy-all empties it', async () => {
    await start();
    const plainRootfs = await mkdtemp(join(rig.base, 'plain-'));
    for (const kind of VOLUME_KINDS) {
      const { hostDir, perm, mountpoint } = VOLUME_LAYOUT[kind];
      expect((await stat(join(rig.data, hostDir))).mode & 0o7777, kind).toBe(0o700);
      const [uid, gid] = [OFFSET + 65536, OFFSET + 2 * 65536];
      const r = await rig.client.call(volByKind[kind].create, {
        id: `k-${kind}`,
        rootfs: plainRootfs,
        mountpoint,
        uid,
        gid,
        chownOnSync: false,
      });
      const st = await stat(r.mounts[0]!.source);
      expect([r.mounts[0]!.source, st.mode & 0o7777, st.uid, st.gid]).toEqual([
        join(rig.data, hostDir, `k-${kind}`),
        perm,
        uid,
        gid,
      ]);
    }
    for (const kind of VOLUME_KINDS) {
      const r = await rig.client.call(volByKind[kind].syncOutAndDestroyAll, {});
      expect(r).toEqual({ destroyed: [`k-${kind}`], failures: [] });
      expect(await readdir(join(rig.data, VOLUME_LAYOUT[kind].hostDir))).toEqual([]);
    }
  });

  it('on start drops volumes whose dir vanished and reports orphan dirs, removing them only when asked', async () => {
    const app = await start();
    const plainRootfs = await mkdtemp(join(rig.base, 'plain-'));
    const mk = (id: string) =>
      rig.client.call(volByKind.kubelet.create, {
        id,
        rootfs: plainRootfs,
        mountpoint: '/var/lib/kubelet',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: false,
      });
    await mk('keep');
    await mk('gone');
    await rm(join(rig.data, 'kubelet/gone'), { recursive: true });
    await mkdir(join(rig.data, 'kubelet/stray'));
    await stopApp(app);

    const again = await start();
    expect(again.reconciled.find((r) => r.kind === 'kubelet')).toMatchObject({
      kept: ['keep'],
      vanished: ['gone'],
      orphans: ['stray'],
      removedOrphans: [],
    });
    expect((await rig.client.call(volList, { kind: 'kubelet' })).volumes.map((v) => v.id)).toEqual(['keep']);
    expect(capture.lines.some((l) => String(l.msg).includes('orphan volume dirs'))).toBe(true);
    await stopApp(again);

    const cleaning = await start({ removeOrphans: true });
    expect(cleaning.reconciled.find((r) => r.kind === 'kubelet')).toMatchObject({
      orphans: ['stray'],
      removedOrphans: ['stray'],
    });
    expect(await readdir(join(rig.data, 'kubelet'))).toEqual(['keep']);
    // Stopping does not destroy volumes; --cleanup-on-stop does.
    await stopApp(cleaning);
    expect(await readdir(join(rig.data, 'kubelet'))).toEqual(['keep']);
    await stopApp(await start({ cleanupOnStop: true }));
    expect(await readdir(join(rig.data, 'kubelet'))).toEqual([]);
  });
});
