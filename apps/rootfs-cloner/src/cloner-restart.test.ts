/**
 * The cloner against real overlay mounts (root in a VM) and a real nats-server for its state:
 * what a new daemon makes of the clones and shifts it finds.
 */
import { chown, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mountsAt, mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { run } from '@sysbox-mgr-ts/exec';
import { describe, expect, it } from 'vitest';
import { cloneAtStart } from './cloner.js';
import { shift } from '@sysbox-mgr-ts/id-shift';
import { owners } from '../test/rootfs.js';
import {
  BOOT_1,
  BOOT_2,
  OFFSET,
  exists,
  expectMixed,
  expectShiftedBy,
  useClonerRig,
} from '../test/cloner-rig.js';
describe('rootfs cloner on real overlay mounts', () => {
  const rig = useClonerRig();
  const { makeCloner, setup, storesOf } = rig;

  it('every clone mount lifted in the same boot: a new daemon re-establishes the clone with its changes', async () => {
    await setup();
    const first = await makeCloner();
    const { rootfs: merged } = await first.createClone('c6', rig.fx.rootfs);
    await first.chownClone('c6', OFFSET, OFFSET);
    await writeFile(join(rig.fx.rootfs, 'etc', 'hostname'), 'c6\n');
    await chown(join(rig.fx.rootfs, 'etc', 'hostname'), OFFSET, OFFSET); // as the container's root would own it

    // The clone's mounts, top first: bind-to-self, clone over rootfs, upper and work binds, the overlay.
    for (const target of [rig.fx.rootfs, rig.fx.rootfs, rig.fx.upperDir, rig.fx.workDir, merged])
      await run('umount', [target], { timeout: 10_000 });
    expect(mountsUnder(await readMountInfo(), rig.dataRoot)).toEqual([]);
    expect(await exists(join(rig.fx.rootfs, 'etc', 'hostname'))).toBe(false);

    const second = await makeCloner();
    const report = await second.reconcile();
    expect(report).toEqual({ adopted: [], reestablished: ['c6'], dropped: [], failed: [], finished: [] });
    expect(await readFile(join(rig.fx.rootfs, 'etc', 'hostname'), 'utf8')).toBe('c6\n');
    expect((await stat(join(rig.fx.rootfs, 'etc', 'passwd'))).uid).toBe(OFFSET);
    expect(mountsAt(await readMountInfo(), rig.fx.rootfs).length).toBe(3);

    // A second start finds everything in place.
    expect(await (await makeCloner()).reconcile()).toEqual({
      adopted: ['c6'],
      reestablished: [],
      dropped: [],
      failed: [],
      finished: [],
    });
    await second.revertChown('c6');
    expect((await stat(join(rig.fx.rootfs, 'etc', 'passwd'))).uid).toBe(0);
    await second.removeClone('c6');
  });

  it('after a reboot (issue #25) a clone of the earlier boot is removed, not brought back over the runtime dirs', async () => {
    await setup();
    const first = await makeCloner('n1', BOOT_1);
    const { rootfs: merged } = await first.createClone('c7', rig.fx.rootfs);
    await first.chownClone('c7', OFFSET, OFFSET);
    const cloneDir = join(rig.dataRoot, 'rootfs', 'c7');
    // Power lost: every mount of the clone is gone.
    for (const target of [rig.fx.rootfs, rig.fx.rootfs, rig.fx.upperDir, rig.fx.workDir, merged])
      await run('umount', [target], { timeout: 10_000 });
    const upperBefore = await readdir(rig.fx.upperDir);

    const report = await (await makeCloner('n1', BOOT_2)).reconcile();
    expect(report.dropped).toEqual([{ id: 'c7', reason: expect.stringMatching(/earlier boot/) }]);
    expect(report.reestablished).toEqual([]);
    expect(mountsUnder(await readMountInfo(), rig.dataRoot)).toEqual([]);
    expect(await exists(cloneDir)).toBe(false);
    expect((await first.list()).clones).toEqual([]);
    // The runtime's own dirs are as the runtime left them: its upper dir, its rootfs mount point.
    expect(await readdir(rig.fx.upperDir)).toEqual(upperBefore);
    expect(await exists(rig.fx.rootfs)).toBe(true);
  });

  it('an unstamped clone (an older version wrote it) is taken for this boot and stamped', async () => {
    await setup();
    const first = await makeCloner('n1', BOOT_1);
    await first.createClone('c8', rig.fx.rootfs);
    const { clones } = await storesOf();
    await clones.mutate('c8', (cur) => cur && { ...cur, boot: undefined });
    expect(await (await makeCloner('n1', BOOT_1)).reconcile()).toMatchObject({
      adopted: ['c8'],
      dropped: [],
    });
    expect((await clones.get('c8'))?.value.boot).toBe(BOOT_1);
    await first.removeClone('c8');
  });

  it.each([
    { boot: BOOT_1, want: 'reconcile' },
    { boot: BOOT_2, want: 'remove' },
    { boot: undefined, want: 'stamp' },
  ] as const)('at start in boot 1, a clone of boot $boot: $want', ({ boot, want }) => {
    expect(cloneAtStart({ boot }, BOOT_1)).toBe(want);
  });

  describe('a daemon killed in the middle of a shift', () => {
    it('a chown cut short is finished at start, then a revert cut short is finished too: exactly original + offset, then exactly the original', async () => {
      await setup();
      const { clones } = await storesOf();
      const first = await makeCloner();
      const { rootfs: merged } = await first.createClone('k1', rig.fx.rootfs);
      const before = await owners(merged);

      // What chown-clone leaves when killed mid-walk: the intent recorded, part of the tree shifted.
      await clones.mutate(
        'k1',
        (cur) => cur && { ...cur, pending: 'chown', uidOffset: OFFSET, gidOffset: OFFSET },
      );
      await shift(join(merged, 'usr'), OFFSET, OFFSET);
      await shift(join(merged, 'etc'), OFFSET, OFFSET);
      expectMixed(before, await owners(merged));

      const second = await makeCloner();
      expect(await second.reconcile()).toEqual({
        adopted: ['k1'],
        reestablished: [],
        dropped: [],
        failed: [],
        finished: [{ id: 'k1', operation: 'chown' }],
      });
      expectShiftedBy(before, await owners(merged), OFFSET);
      expect((await clones.get('k1'))?.value).toMatchObject({ chowned: true });
      expect((await clones.get('k1'))?.value.pending).toBeUndefined();
      expect((await stat(join(rig.fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);

      // Now revert-chown killed mid-walk, the binds it had lifted left down.
      await clones.mutate('k1', (cur) => cur && { ...cur, pending: 'revert' });
      for (const target of [rig.fx.rootfs, rig.fx.rootfs]) await run('umount', [target], { timeout: 10_000 });
      await shift(join(merged, 'hl'), -OFFSET, -OFFSET);
      await shift(join(merged, 'opt'), -OFFSET, -OFFSET);
      expectMixed(before, await owners(merged));

      const third = await makeCloner();
      expect(await third.reconcile()).toEqual({
        adopted: [],
        reestablished: ['k1'],
        dropped: [],
        failed: [],
        finished: [{ id: 'k1', operation: 'revert' }],
      });
      expect(await owners(merged)).toEqual(before);
      expect((await clones.get('k1'))?.value).toMatchObject({ chowned: false });
      expect((await clones.get('k1'))?.value.pending).toBeUndefined();
      expect(mountsAt(await readMountInfo(), rig.fx.rootfs).length).toBe(3);
      expect((await (await makeCloner()).reconcile()).finished).toEqual([]);
      await third.removeClone('k1');
    });

    it('a retried chown-clone or revert-chown finishes what is pending; another offset is refused', async () => {
      await setup();
      const { clones } = await storesOf();
      const cloner = await makeCloner();
      const { rootfs: merged } = await cloner.createClone('k2', rig.fx.rootfs);
      const before = await owners(merged);
      await clones.mutate(
        'k2',
        (cur) => cur && { ...cur, pending: 'chown', uidOffset: OFFSET, gidOffset: OFFSET },
      );
      await shift(join(merged, 'home'), OFFSET, OFFSET);

      await expect(cloner.chownClone('k2', OFFSET + 65536, OFFSET + 65536)).rejects.toMatchObject({
        code: 'failed-precondition',
      });
      await cloner.chownClone('k2', OFFSET, OFFSET);
      expectShiftedBy(before, await owners(merged), OFFSET);
      await cloner.chownClone('k2', OFFSET, OFFSET);
      expectShiftedBy(before, await owners(merged), OFFSET);

      // A revert cut short, retried; and a chown cut short that the runtime then asks to undo.
      await clones.mutate('k2', (cur) => cur && { ...cur, pending: 'revert' });
      await shift(join(merged, 'bin'), -OFFSET, -OFFSET);
      await cloner.revertChown('k2');
      expect(await owners(merged)).toEqual(before);
      await clones.mutate('k2', (cur) => cur && { ...cur, pending: 'chown' });
      await shift(join(merged, 'usr'), OFFSET, OFFSET);
      await cloner.revertChown('k2');
      expect(await owners(merged)).toEqual(before);
      expect((await clones.get('k2'))?.value).toMatchObject({ chowned: false });
      expect((await clones.get('k2'))?.value.pending).toBeUndefined();
      await cloner.removeClone('k2');
    });

    it('an upper-dir shift cut short is finished at start, and so is its revert; a retried shift-upper finishes too', async () => {
      await setup();
      const { uppers } = await storesOf();
      const upper = join(rig.base, 'idmapped-upper');
      await mkdir(join(upper, 'etc'), { recursive: true });
      await mkdir(join(upper, 'home', 'user'), { recursive: true });
      for (const f of ['etc/motd', 'etc/hosts', 'home/user/notes']) await writeFile(join(upper, f), 'x');
      await chown(join(upper, 'home', 'user'), 1000, 1000);
      await chown(join(upper, 'home', 'user', 'notes'), 1000, 1000);
      const before = await owners(upper);
      /** What shift-upper leaves when killed mid-walk: its record saying a shift is under way. */
      const recordPendingShift = () =>
        uppers.create('u9', {
          id: 'u9',
          upperDir: upper,
          uidOffset: OFFSET,
          gidOffset: OFFSET,
          shifted: false,
          pending: 'shift',
        });

      await recordPendingShift();
      await shift(join(upper, 'etc'), OFFSET, OFFSET);
      expectMixed(before, await owners(upper));
      expect((await (await makeCloner()).reconcile()).finished).toEqual([
        { id: 'u9', operation: 'shift-upper' },
      ]);
      expectShiftedBy(before, await owners(upper), OFFSET);
      expect((await uppers.get('u9'))?.value).toMatchObject({ shifted: true });
      expect((await uppers.get('u9'))?.value.pending).toBeUndefined();

      await uppers.mutate('u9', (cur) => cur && { ...cur, pending: 'revert' });
      await shift(join(upper, 'home'), -OFFSET, -OFFSET);
      expectMixed(before, await owners(upper));
      expect((await (await makeCloner()).reconcile()).finished).toEqual([
        { id: 'u9', operation: 'revert-upper' },
      ]);
      expect(await owners(upper)).toEqual(before);
      expect(await uppers.get('u9')).toBeUndefined();

      const cloner = await makeCloner();
      await recordPendingShift();
      await shift(join(upper, 'home'), OFFSET, OFFSET);
      await expect(cloner.shiftUpper('u9', upper, OFFSET + 65536, OFFSET + 65536)).rejects.toMatchObject({
        code: 'already-exists',
      });
      await cloner.shiftUpper('u9', upper, OFFSET, OFFSET);
      expectShiftedBy(before, await owners(upper), OFFSET);
      await cloner.revertUpper('u9');
      expect(await owners(upper)).toEqual(before);
    });
  });
});
