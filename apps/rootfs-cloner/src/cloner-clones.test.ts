/**
 * The cloner against real overlay mounts (root in a VM) and a real nats-server for its state:
 * create, chown, revert and remove a clone.
 */
import { chown, lstat, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mountsAt, mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { run } from '@sysbox-mgr-ts/exec';
import { describe, expect, it } from 'vitest';
import { owners } from '../test/rootfs.js';
import { OFFSET, exists, useClonerRig } from '../test/cloner-rig.js';
describe('rootfs cloner on real overlay mounts', () => {
  const rig = useClonerRig();
  const { makeCloner, setup } = rig;

  it('create-clone stacks the clone over the original rootfs as upstream does', async () => {
    await setup();
    const cloner = await makeCloner();
    const reply = await cloner.createClone('c1', rig.fx.rootfs);
    const merged = join(rig.dataRoot, 'rootfs', 'c1', 'overlay2', 'merged');
    expect(reply).toEqual({ rootfs: merged, origWorkDir: rig.fx.workDir });

    const mounts = await readMountInfo();
    const [clone] = mountsAt(mounts, merged);
    expect(clone?.fsType).toBe('overlay');
    expect(clone?.superOptions).toEqual(
      expect.arrayContaining([
        'metacopy=on',
        'index=on',
        `upperdir=${join(rig.dataRoot, 'rootfs/c1/overlay2/diff')}`,
      ]),
    );
    // The clone's overlay is mounted twice (its merged dir and the original rootfs) ...
    expect(
      mounts.filter(
        (m) => m.majorMinor === clone!.majorMinor && m.root === '/' && m.mountPoint !== rig.fx.rootfs,
      ).length,
    ).toBe(1);
    // ... and the original rootfs holds three stacked mounts: the runtime's, the clone, the bind-to-self.
    const stacked = mountsAt(mounts, rig.fx.rootfs);
    expect(stacked.length).toBe(3);
    expect(stacked[0]!.majorMinor).not.toBe(clone!.majorMinor);
    expect(stacked.slice(1).map((m) => m.majorMinor)).toEqual([clone!.majorMinor, clone!.majorMinor]);
    expect(mountsAt(mounts, rig.fx.upperDir).length).toBe(1);
    expect(mountsAt(mounts, rig.fx.workDir).length).toBe(1);
    for (const f of rig.fx.layerFiles) expect(await exists(join(rig.fx.rootfs, f))).toBe(true);
    expect(await readFile(join(rig.fx.rootfs, 'hl/b'), 'utf8')).toBe('linked\n');

    // The same create again (a reply lost to a reconnect) is answered the same and mounts nothing
    // more; another rootfs for the same container is refused.
    await expect(cloner.createClone('c1', rig.fx.rootfs)).resolves.toEqual({
      rootfs: merged,
      origWorkDir: rig.fx.workDir,
    });
    expect(mountsAt(await readMountInfo(), rig.fx.rootfs).length).toBe(3);
    await expect(cloner.createClone('c1', rig.fx.upperDir)).rejects.toMatchObject({ code: 'already-exists' });
    expect((await cloner.list()).clones).toEqual([
      expect.objectContaining({ id: 'c1', mounted: true, chowned: false, cloneRootfs: merged }),
    ]);
    await cloner.removeClone('c1');
  });

  it('chown-clone shifts every entry and every hard-link name, lowers stay put; revert restores exactly', async () => {
    await setup();
    const cloner = await makeCloner();
    const { rootfs: merged } = await cloner.createClone('c2', rig.fx.rootfs);
    const before = await owners(merged);
    const lowersBefore = await Promise.all(rig.fx.lowerDirs.map(owners));

    await cloner.chownClone('c2', OFFSET, OFFSET);
    const after = await owners(merged);
    expect(after.size).toBe(before.size);
    for (const [path, owner] of before) {
      const [u, g] = owner.split(':').map(Number);
      expect([path, after.get(path)]).toEqual([path, `${u! + OFFSET}:${g! + OFFSET}`]);
    }
    for (const group of rig.fx.hardLinks) {
      const st = await Promise.all(group.map((n) => lstat(join(merged, n))));
      expect(st.map((s) => s.uid)).toEqual(group.map(() => OFFSET));
      // index=on keeps the copied-up names one inode.
      expect(new Set(st.map((s) => s.ino)).size).toBe(1);
    }
    expect(await Promise.all(rig.fx.lowerDirs.map(owners))).toEqual(lowersBefore);
    // The runtime's view goes through the clone: the container sees shifted owners.
    expect((await stat(join(rig.fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);
    expect(mountsAt(await readMountInfo(), rig.fx.rootfs).length).toBe(3);
    await expect(cloner.chownClone('c2', 1, 1)).rejects.toMatchObject({ code: 'failed-precondition' });
    // The same chown again shifts nothing twice.
    await cloner.chownClone('c2', OFFSET, OFFSET);
    expect((await stat(join(rig.fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);

    await cloner.revertChown('c2');
    expect(await owners(merged)).toEqual(before);
    expect((await cloner.list()).clones[0]).toMatchObject({ id: 'c2', chowned: false, uidOffset: OFFSET });
    await cloner.removeClone('c2');
  });

  it("revert-chown moves only the container's ids back and leaves what the host made meanwhile (it used to refuse)", async () => {
    await setup();
    const cloner = await makeCloner();
    const { rootfs: merged } = await cloner.createClone('c7', rig.fx.rootfs);
    const before = await owners(merged);
    await cloner.chownClone('c7', OFFSET, OFFSET);
    // While the container runs, the runtime writes a file as host root into its rootfs.
    await writeFile(join(merged, 'etc/host-made'), 'written by the host\n');
    await chown(join(merged, 'etc/host-made'), 0, 0);

    await cloner.revertChown('c7');
    const after = await owners(merged);
    expect(after.get('etc/host-made')).toBe('0:0');
    after.delete('etc/host-made');
    expect(after).toEqual(before);
    expect((await cloner.list()).clones[0]).toMatchObject({ id: 'c7', chowned: false });
    await cloner.removeClone('c7');
  });

  it('writes through the original rootfs land in the clone; remove-clone leaves nothing behind', async () => {
    await setup();
    const cloner = await makeCloner();
    await cloner.createClone('c3', rig.fx.rootfs);
    await writeFile(join(rig.fx.rootfs, 'opt', 'written'), 'by the container\n');
    const diff = join(rig.dataRoot, 'rootfs', 'c3', 'overlay2', 'diff');
    expect(await readFile(join(diff, 'opt', 'written'), 'utf8')).toBe('by the container\n');
    expect(await exists(join(rig.fx.upperDir, 'opt', 'written'))).toBe(true); // the bind shows the clone's diff there
    expect(await readdir(join(rig.fixtureDir, 'snapshots', '3', 'fs', 'opt'))).toEqual(['app']);

    await cloner.containerStopped('c3');
    await cloner.removeClone('c3');
    const mounts = await readMountInfo();
    expect(mountsUnder(mounts, rig.dataRoot)).toEqual([]);
    expect(mountsAt(mounts, rig.fx.rootfs)).toEqual([]);
    expect(mountsAt(mounts, rig.fx.upperDir)).toEqual([]);
    expect(await exists(join(rig.dataRoot, 'rootfs', 'c3'))).toBe(false);
    expect(await exists(rig.fx.rootfs)).toBe(false);
    await expect(cloner.removeClone('c3')).rejects.toMatchObject({ code: 'not-found' });
    expect((await cloner.list()).clones).toEqual([]);
  });

  it('clones an overlay whose lowerdirs are relative, mounting from the snapshot dir', async () => {
    await setup({ relativeLowerDirs: true });
    const cloner = await makeCloner();
    const { rootfs: merged } = await cloner.createClone('c4', rig.fx.rootfs);
    const [clone] = mountsAt(await readMountInfo(), merged);
    expect(clone?.superOptions.find((o) => o.startsWith('lowerdir='))).toBe('lowerdir=3/fs:2/fs:1/fs');
    for (const f of rig.fx.layerFiles) expect(await exists(join(rig.fx.rootfs, f))).toBe(true);
    await cloner.chownClone('c4', OFFSET, OFFSET);
    expect((await lstat(join(merged, 'usr/lib/lib2.so'))).uid).toBe(OFFSET);
    await cloner.removeClone('c4');
  });

  it('refuses a rootfs that is not on overlayfs, touching nothing', async () => {
    await setup();
    const cloner = await makeCloner();
    const plain = join(rig.base, 'plain');
    await mkdir(plain);
    await expect(cloner.createClone('c5', plain)).rejects.toMatchObject({ code: 'unsupported' });
    await run('mount', ['-t', 'tmpfs', 'tmpfs', plain], { timeout: 10_000 });
    await expect(cloner.createClone('c5', plain)).rejects.toMatchObject({
      code: 'unsupported',
      message: /tmpfs/,
    });
    expect(await exists(join(rig.dataRoot, 'rootfs', 'c5'))).toBe(false);
    expect((await cloner.list()).clones).toEqual([]);
  });
});
