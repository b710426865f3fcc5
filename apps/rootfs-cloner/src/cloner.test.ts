/**
 * The cloner against real overlay mounts (root in a VM) and a real nats-server for its state.
 */
import {
  access,
  chown,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootfsService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CloneRecord,
  UpperRecord,
  cloneAtStart,
  createCloner,
  type Cloner,
  type ShiftIds,
} from './cloner.js';
import { createMounter } from './mounter.js';
import { shift } from '@sysbox-mgr-ts/id-shift';
import {
  buildRuntimeRootfs,
  owners,
  testGuard,
  unmountAllUnder,
  type RuntimeRootfs,
} from '../test/rootfs.js';

const OFFSET = 165536;
const BOOT_1 = '11111111-1111-4111-8111-111111111111';
const BOOT_2 = '22222222-2222-4222-8222-222222222222';
const silent = silentLogger();
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

describe('rootfs cloner on real overlay mounts', () => {
  const nats = useNatsServer();
  let base: string;
  let dataRoot: string;
  let shiftIds: ShiftIds;

  const makeCloner = async (node = 'n1', bootId = BOOT_1): Promise<Cloner> => {
    const kv = await openBucket(nats.nc, rootfsService.bucket);
    return createCloner({
      dataRoot,
      clones: createStateStore(kv, { node, namespace: 'clone', schema: CloneRecord }),
      uppers: createStateStore(kv, { node, namespace: 'upper', schema: UpperRecord }),
      mounter: createMounter({ timeoutMs: 10_000 }),
      shiftIds,
      log: silent,
      pageSize: 4096,
      shiftTimeoutMs: 20_000,
      readMounts: () => readMountInfo(),
      guard: await testGuard(base, dataRoot),
      bootId,
    });
  };

  beforeAll(async () => {
    shiftIds = shift;
  });

  /** The state stores a cloner of `node` uses, to write what a daemon killed mid-shift leaves. */
  const storesOf = async (node = 'n1') => {
    const kv = await openBucket(nats.nc, rootfsService.bucket);
    return {
      clones: createStateStore(kv, { node, namespace: 'clone', schema: CloneRecord }),
      uppers: createStateStore(kv, { node, namespace: 'upper', schema: UpperRecord }),
    };
  };

  /** Every entry of `now` is its entry in `before` shifted by `offset`, and nothing else is there. */
  const expectShiftedBy = (before: Map<string, string>, now: Map<string, string>, offset: number): void => {
    expect(now.size).toBe(before.size);
    for (const [path, owner] of before) {
      const [u, g] = owner.split(':').map(Number);
      expect([path, now.get(path)]).toEqual([path, `${u! + offset}:${g! + offset}`]);
    }
  };

  /** Some entries at their original owners and some at original + offset: what a killed walk leaves. */
  const expectMixed = (before: Map<string, string>, now: Map<string, string>): void => {
    const moved = [...before].filter(([path, owner]) => now.get(path) !== owner).length;
    expect(moved).toBeGreaterThan(0);
    expect(moved).toBeLessThan(before.size);
  };

  let fixtureDir: string;
  let fx: RuntimeRootfs;
  const setup = async (opts: { relativeLowerDirs?: boolean } = {}) => {
    base = await mkdtemp(join(tmpdir(), 'rfc-clone-'));
    dataRoot = join(base, 'data');
    fixtureDir = join(base, 'runtime');
    fx = await buildRuntimeRootfs(fixtureDir, opts);
  };
  afterEach(async () => {
    if (!base) return;
    await unmountAllUnder(base);
    expect(mountsUnder(await readMountInfo(), base)).toEqual([]);
    await rm(base, { recursive: true, force: true });
    base = '';
  });

  it('create-clone stacks the clone over the original rootfs as upstream does', async () => {
    await setup();
    const cloner = await makeCloner();
    const reply = await cloner.createClone('c1', fx.rootfs);
    const merged = join(dataRoot, 'rootfs', 'c1', 'overlay2', 'merged');
    expect(reply).toEqual({ rootfs: merged, origWorkDir: fx.workDir });

    const mounts = await readMountInfo();
    const [clone] = mountsAt(mounts, merged);
    expect(clone?.fsType).toBe('overlay');
    expect(clone?.superOptions).toEqual(
      expect.arrayContaining([
        'metacopy=on',
        'index=on',
        `upperdir=${join(dataRoot, 'rootfs/c1/overlay2/diff')}`,
      ]),
    );
    // The clone's overlay is mounted twice (its merged dir and the original rootfs) ...
    expect(
      mounts.filter((m) => m.majorMinor === clone!.majorMinor && m.root === '/' && m.mountPoint !== fx.rootfs)
        .length,
    ).toBe(1);
    // ... and the original rootfs holds three stacked mounts: the runtime's, the clone, the bind-to-self.
    const stacked = mountsAt(mounts, fx.rootfs);
    expect(stacked.length).toBe(3);
    expect(stacked[0]!.majorMinor).not.toBe(clone!.majorMinor);
    expect(stacked.slice(1).map((m) => m.majorMinor)).toEqual([clone!.majorMinor, clone!.majorMinor]);
    expect(mountsAt(mounts, fx.upperDir).length).toBe(1);
    expect(mountsAt(mounts, fx.workDir).length).toBe(1);
    for (const f of fx.layerFiles) expect(await exists(join(fx.rootfs, f))).toBe(true);
    expect(await readFile(join(fx.rootfs, 'hl/b'), 'utf8')).toBe('linked\n');

    // The same create again (a reply lost to a reconnect) is answered the same and mounts nothing
    // more; another rootfs for the same container is refused.
    await expect(cloner.createClone('c1', fx.rootfs)).resolves.toEqual({
      rootfs: merged,
      origWorkDir: fx.workDir,
    });
    expect(mountsAt(await readMountInfo(), fx.rootfs).length).toBe(3);
    await expect(cloner.createClone('c1', fx.upperDir)).rejects.toMatchObject({ code: 'already-exists' });
    expect((await cloner.list()).clones).toEqual([
      expect.objectContaining({ id: 'c1', mounted: true, chowned: false, cloneRootfs: merged }),
    ]);
    await cloner.removeClone('c1');
  });

  it('chown-clone shifts every entry and every hard-link name, lowers stay put; revert restores exactly', async () => {
    await setup();
    const cloner = await makeCloner();
    const { rootfs: merged } = await cloner.createClone('c2', fx.rootfs);
    const before = await owners(merged);
    const lowersBefore = await Promise.all(fx.lowerDirs.map(owners));

    await cloner.chownClone('c2', OFFSET, OFFSET);
    const after = await owners(merged);
    expect(after.size).toBe(before.size);
    for (const [path, owner] of before) {
      const [u, g] = owner.split(':').map(Number);
      expect([path, after.get(path)]).toEqual([path, `${u! + OFFSET}:${g! + OFFSET}`]);
    }
    for (const group of fx.hardLinks) {
      const st = await Promise.all(group.map((n) => lstat(join(merged, n))));
      expect(st.map((s) => s.uid)).toEqual(group.map(() => OFFSET));
      // index=on keeps the copied-up names one inode.
      expect(new Set(st.map((s) => s.ino)).size).toBe(1);
    }
    expect(await Promise.all(fx.lowerDirs.map(owners))).toEqual(lowersBefore);
    // The runtime's view goes through the clone: the container sees shifted owners.
    expect((await stat(join(fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);
    expect(mountsAt(await readMountInfo(), fx.rootfs).length).toBe(3);
    await expect(cloner.chownClone('c2', 1, 1)).rejects.toMatchObject({ code: 'failed-precondition' });
    // The same chown again shifts nothing twice.
    await cloner.chownClone('c2', OFFSET, OFFSET);
    expect((await stat(join(fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);

    await cloner.revertChown('c2');
    expect(await owners(merged)).toEqual(before);
    expect((await cloner.list()).clones[0]).toMatchObject({ id: 'c2', chowned: false, uidOffset: OFFSET });
    await cloner.removeClone('c2');
  });

  it("revert-chown moves only the container's ids back and leaves what the host made meanwhile (it used to refuse)", async () => {
    await setup();
    const cloner = await makeCloner();
    const { rootfs: merged } = await cloner.createClone('c7', fx.rootfs);
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
    await cloner.createClone('c3', fx.rootfs);
    await writeFile(join(fx.rootfs, 'opt', 'written'), 'by the container\n');
    const diff = join(dataRoot, 'rootfs', 'c3', 'overlay2', 'diff');
    expect(await readFile(join(diff, 'opt', 'written'), 'utf8')).toBe('by the container\n');
    expect(await exists(join(fx.upperDir, 'opt', 'written'))).toBe(true); // the bind shows the clone's diff there
    expect(await readdir(join(fixtureDir, 'snapshots', '3', 'fs', 'opt'))).toEqual(['app']);

    await cloner.containerStopped('c3');
    await cloner.removeClone('c3');
    const mounts = await readMountInfo();
    expect(mountsUnder(mounts, dataRoot)).toEqual([]);
    expect(mountsAt(mounts, fx.rootfs)).toEqual([]);
    expect(mountsAt(mounts, fx.upperDir)).toEqual([]);
    expect(await exists(join(dataRoot, 'rootfs', 'c3'))).toBe(false);
    expect(await exists(fx.rootfs)).toBe(false);
    await expect(cloner.removeClone('c3')).rejects.toMatchObject({ code: 'not-found' });
    expect((await cloner.list()).clones).toEqual([]);
  });

  it('clones an overlay whose lowerdirs are relative, mounting from the snapshot dir', async () => {
    await setup({ relativeLowerDirs: true });
    const cloner = await makeCloner();
    const { rootfs: merged } = await cloner.createClone('c4', fx.rootfs);
    const [clone] = mountsAt(await readMountInfo(), merged);
    expect(clone?.superOptions.find((o) => o.startsWith('lowerdir='))).toBe('lowerdir=3/fs:2/fs:1/fs');
    for (const f of fx.layerFiles) expect(await exists(join(fx.rootfs, f))).toBe(true);
    await cloner.chownClone('c4', OFFSET, OFFSET);
    expect((await lstat(join(merged, 'usr/lib/lib2.so'))).uid).toBe(OFFSET);
    await cloner.removeClone('c4');
  });

  it('refuses a rootfs that is not on overlayfs, touching nothing', async () => {
    await setup();
    const cloner = await makeCloner();
    const plain = join(base, 'plain');
    await mkdir(plain);
    await expect(cloner.createClone('c5', plain)).rejects.toMatchObject({ code: 'unsupported' });
    await run('mount', ['-t', 'tmpfs', 'tmpfs', plain], { timeout: 10_000 });
    await expect(cloner.createClone('c5', plain)).rejects.toMatchObject({
      code: 'unsupported',
      message: /tmpfs/,
    });
    expect(await exists(join(dataRoot, 'rootfs', 'c5'))).toBe(false);
    expect((await cloner.list()).clones).toEqual([]);
  });

  it('every clone mount lifted in the same boot: a new daemon re-establishes the clone with its changes', async () => {
    await setup();
    const first = await makeCloner();
    const { rootfs: merged } = await first.createClone('c6', fx.rootfs);
    await first.chownClone('c6', OFFSET, OFFSET);
    await writeFile(join(fx.rootfs, 'etc', 'hostname'), 'c6\n');
    await chown(join(fx.rootfs, 'etc', 'hostname'), OFFSET, OFFSET); // as the container's root would own it

    // The clone's mounts, top first: bind-to-self, clone over rootfs, upper and work binds, the overlay.
    for (const target of [fx.rootfs, fx.rootfs, fx.upperDir, fx.workDir, merged])
      await run('umount', [target], { timeout: 10_000 });
    expect(mountsUnder(await readMountInfo(), dataRoot)).toEqual([]);
    expect(await exists(join(fx.rootfs, 'etc', 'hostname'))).toBe(false);

    const second = await makeCloner();
    const report = await second.reconcile();
    expect(report).toEqual({ adopted: [], reestablished: ['c6'], dropped: [], failed: [], finished: [] });
    expect(await readFile(join(fx.rootfs, 'etc', 'hostname'), 'utf8')).toBe('c6\n');
    expect((await stat(join(fx.rootfs, 'etc', 'passwd'))).uid).toBe(OFFSET);
    expect(mountsAt(await readMountInfo(), fx.rootfs).length).toBe(3);

    // A second start finds everything in place.
    expect(await (await makeCloner()).reconcile()).toEqual({
      adopted: ['c6'],
      reestablished: [],
      dropped: [],
      failed: [],
      finished: [],
    });
    await second.revertChown('c6');
    expect((await stat(join(fx.rootfs, 'etc', 'passwd'))).uid).toBe(0);
    await second.removeClone('c6');
  });

  it('after a reboot (issue #25) a clone of the earlier boot is removed, not brought back over the runtime dirs', async () => {
    await setup();
    const first = await makeCloner('n1', BOOT_1);
    const { rootfs: merged } = await first.createClone('c7', fx.rootfs);
    await first.chownClone('c7', OFFSET, OFFSET);
    const cloneDir = join(dataRoot, 'rootfs', 'c7');
    // Power lost: every mount of the clone is gone.
    for (const target of [fx.rootfs, fx.rootfs, fx.upperDir, fx.workDir, merged])
      await run('umount', [target], { timeout: 10_000 });
    const upperBefore = await readdir(fx.upperDir);

    const report = await (await makeCloner('n1', BOOT_2)).reconcile();
    expect(report.dropped).toEqual([{ id: 'c7', reason: expect.stringMatching(/earlier boot/) }]);
    expect(report.reestablished).toEqual([]);
    expect(mountsUnder(await readMountInfo(), dataRoot)).toEqual([]);
    expect(await exists(cloneDir)).toBe(false);
    expect((await first.list()).clones).toEqual([]);
    // The runtime's own dirs are as the runtime left them: its upper dir, its rootfs mount point.
    expect(await readdir(fx.upperDir)).toEqual(upperBefore);
    expect(await exists(fx.rootfs)).toBe(true);
  });

  it('an unstamped clone (an older version wrote it) is taken for this boot and stamped', async () => {
    await setup();
    const first = await makeCloner('n1', BOOT_1);
    await first.createClone('c8', fx.rootfs);
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

  it('shift-upper chowns an upper dir (or only records a runtime chown), revert-upper restores it, both survive a restart', async () => {
    await setup();
    const upper = join(base, 'idmapped-upper');
    await mkdir(join(upper, 'etc'), { recursive: true });
    await writeFile(join(upper, 'etc', 'motd'), 'hi');
    const before = await owners(upper);

    const first = await makeCloner();
    await first.shiftUpper('u1', upper, OFFSET, OFFSET);
    expect((await stat(join(upper, 'etc', 'motd'))).uid).toBe(OFFSET);
    // The same shift again changes nothing; another one is refused.
    await first.shiftUpper('u1', upper, OFFSET, OFFSET);
    expect((await stat(join(upper, 'etc', 'motd'))).uid).toBe(OFFSET);
    await expect(first.shiftUpper('u1', upper, OFFSET + 65536, OFFSET + 65536)).rejects.toMatchObject({
      code: 'already-exists',
    });
    expect((await first.list()).uppers).toEqual([
      { id: 'u1', upperDir: upper, uidOffset: OFFSET, gidOffset: OFFSET, shifted: true },
    ]);

    // A restarted daemon knows the upper is shifted and reverts it exactly once.
    const second = await makeCloner();
    await second.revertUpper('u1');
    expect(await owners(upper)).toEqual(before);
    await second.revertUpper('u1');
    expect(await owners(upper)).toEqual(before);
    expect((await second.list()).uppers).toEqual([]);

    // The runtime chowned it itself: recorded, not shifted twice; the revert undoes the runtime's chown.
    await shift(upper, OFFSET, OFFSET);
    const chowned = await owners(upper);
    await second.shiftUpper('u1', upper, OFFSET, OFFSET, true);
    expect(await owners(upper)).toEqual(chowned);
    await second.revertUpper('u1');
    expect(await owners(upper)).toEqual(before);

    await expect(second.shiftUpper('u2', join(base, 'no-such-upper'), 1, 1)).rejects.toMatchObject({
      code: 'invalid-request',
    });
    expect((await second.list()).uppers).toEqual([]);
  });

  describe('a daemon killed in the middle of a shift', () => {
    it('a chown cut short is finished at start, then a revert cut short is finished too: exactly original + offset, then exactly the original', async () => {
      await setup();
      const { clones } = await storesOf();
      const first = await makeCloner();
      const { rootfs: merged } = await first.createClone('k1', fx.rootfs);
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
      expect((await stat(join(fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);

      // Now revert-chown killed mid-walk, the binds it had lifted left down.
      await clones.mutate('k1', (cur) => cur && { ...cur, pending: 'revert' });
      for (const target of [fx.rootfs, fx.rootfs]) await run('umount', [target], { timeout: 10_000 });
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
      expect(mountsAt(await readMountInfo(), fx.rootfs).length).toBe(3);
      expect((await (await makeCloner()).reconcile()).finished).toEqual([]);
      await third.removeClone('k1');
    });

    it('a retried chown-clone or revert-chown finishes what is pending; another offset is refused', async () => {
      await setup();
      const { clones } = await storesOf();
      const cloner = await makeCloner();
      const { rootfs: merged } = await cloner.createClone('k2', fx.rootfs);
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
      const upper = join(base, 'idmapped-upper');
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

  describe('hostile requests and forged records change nothing on the host', () => {
    it('create-clone refuses a rootfs outside the allowed roots, and one whose layers lie outside them', async () => {
      await setup();
      const outside = await mkdtemp(join(tmpdir(), 'rfc-not-a-runtime-'));
      try {
        const foreign = await buildRuntimeRootfs(outside);
        const cloner = await makeCloner();
        await expect(cloner.createClone('h1', foreign.rootfs)).rejects.toMatchObject({
          code: 'invalid-request',
          message: expect.stringContaining('allowed rootfs root'),
        });
        // The merged dir sits under the allowed root, but its lower layer is a host dir outside it.
        const merged = join(base, 'sneaky/rootfs');
        await mkdir(merged, { recursive: true });
        await mkdir(join(base, 'sneaky/upper'));
        await mkdir(join(base, 'sneaky/work'));
        await run(
          'mount',
          [
            '-t',
            'overlay',
            'overlay',
            '-o',
            `lowerdir=${foreign.lowerDirs[0]},upperdir=${join(base, 'sneaky/upper')},workdir=${join(base, 'sneaky/work')}`,
            merged,
          ],
          { timeout: 10_000 },
        );
        await expect(cloner.createClone('h2', merged)).rejects.toMatchObject({
          code: 'invalid-request',
          message: expect.stringContaining('lower dir'),
        });
        expect(await exists(join(dataRoot, 'rootfs', 'h1'))).toBe(false);
        expect(await exists(join(dataRoot, 'rootfs', 'h2'))).toBe(false);
        expect((await cloner.list()).clones).toEqual([]);
        expect(mountsAt(await readMountInfo(), merged).length).toBe(1);
      } finally {
        await unmountAllUnder(outside);
        await rm(outside, { recursive: true, force: true });
      }
    });

    it('chown-clone and shift-upper refuse offsets outside the delegated ranges and negative ones', async () => {
      await setup();
      const cloner = await makeCloner();
      const { rootfs } = await cloner.createClone('h3', fx.rootfs);
      const before = await owners(rootfs);
      for (const [u, g] of [
        [0, 0],
        [1000, 1000],
        [-OFFSET, -OFFSET],
        [OFFSET, 1000],
        [OFFSET + 15 * 65536 + 1, OFFSET],
      ] as const) {
        await expect(cloner.chownClone('h3', u, g), `${u}:${g}`).rejects.toMatchObject({
          code: 'invalid-request',
        });
        await expect(cloner.shiftUpper('h3', fx.upperDir, u, g), `${u}:${g}`).rejects.toMatchObject({
          code: 'invalid-request',
        });
      }
      await expect(cloner.shiftUpper('h3', '/etc', OFFSET, OFFSET)).rejects.toMatchObject({
        code: 'invalid-request',
      });
      expect(await owners(rootfs)).toEqual(before);
      expect((await cloner.list()).clones).toMatchObject([{ id: 'h3', chowned: false, uidOffset: 0 }]);
      expect((await cloner.list()).uppers).toEqual([]);
      await cloner.removeClone('h3');
    });

    it('a forged record whose cloneDir points at a decoy is not deleted, unmounted or shifted', async () => {
      await setup();
      const decoy = join(base, 'decoy');
      await mkdir(join(decoy, 'overlay2'), { recursive: true });
      await writeFile(join(decoy, 'keep'), 'host data');
      const kv = await openBucket(nats.nc, rootfsService.bucket);
      const clones = createStateStore(kv, { node: 'forged', namespace: 'clone', schema: CloneRecord });
      const uppers = createStateStore(kv, { node: 'forged', namespace: 'upper', schema: UpperRecord });
      const forged: CloneRecord = {
        id: 'f1',
        origRootfs: fx.rootfs,
        cloneDir: decoy,
        mergedDir: join(decoy, 'overlay2/merged'),
        diffDir: join(decoy, 'overlay2/diff'),
        workDir: join(decoy, 'overlay2/work'),
        origUpperDir: fx.upperDir,
        origWorkDir: fx.workDir,
        lowerDirs: fx.lowerDirs,
        mountOptions: `lowerdir=${fx.lowerDirs.join(':')},upperdir=${join(decoy, 'overlay2/diff')},workdir=${join(decoy, 'overlay2/work')}`,
        propagation: 'private',
        uidOffset: OFFSET,
        gidOffset: OFFSET,
        chowned: true,
        bindToSelfActive: true,
        createdAt: new Date().toISOString(),
      };
      await clones.create('f1', forged);
      // Right dirs, but a revert that would shift the clone down past root.
      const derived = join(dataRoot, 'rootfs', 'f2', 'overlay2');
      await clones.create('f2', {
        ...forged,
        id: 'f2',
        cloneDir: join(dataRoot, 'rootfs', 'f2'),
        mergedDir: join(derived, 'merged'),
        diffDir: join(derived, 'diff'),
        workDir: join(derived, 'work'),
        mountOptions: `lowerdir=${fx.lowerDirs.join(':')},upperdir=${join(derived, 'diff')},workdir=${join(derived, 'work')}`,
        uidOffset: -OFFSET,
        gidOffset: -OFFSET,
      });
      // An upper-dir shift on record for a dir outside every rootfs root.
      const outside = await mkdtemp(join(tmpdir(), 'rfc-upper-decoy-'));
      await uppers.create('f3', {
        id: 'f3',
        upperDir: outside,
        uidOffset: OFFSET,
        gidOffset: OFFSET,
        shifted: true,
      });
      try {
        // The same node's stores as the forged records were written through.
        const cloner = await makeCloner('forged');
        const decoyOwners = await owners(decoy);
        const rootfsOwners = await owners(fx.rootfs);
        await expect(cloner.removeClone('f1')).rejects.toMatchObject({
          code: 'internal',
          message: expect.stringContaining('cloneDir'),
        });
        await expect(cloner.revertChown('f1')).rejects.toMatchObject({ code: 'internal' });
        await expect(cloner.revertChown('f2')).rejects.toMatchObject({
          code: 'invalid-request',
          message: expect.stringContaining('negative offset'),
        });
        await expect(cloner.revertUpper('f3')).rejects.toMatchObject({ code: 'invalid-request' });
        // At start the forged clone is refused; the other names nothing to bring back and is dropped.
        const report = await cloner.reconcile();
        expect(report.failed.map((f) => f.id)).toEqual(['f1']);
        expect(report.dropped.map((f) => f.id)).toEqual(['f2']);
        expect(await readFile(join(decoy, 'keep'), 'utf8')).toBe('host data');
        expect(await owners(decoy)).toEqual(decoyOwners);
        expect(await owners(fx.rootfs)).toEqual(rootfsOwners);
        expect((await stat(outside)).uid).toBe(0);
        expect(mountsUnder(await readMountInfo(), decoy)).toEqual([]);
        expect(mountsAt(await readMountInfo(), fx.rootfs).length).toBe(1);
      } finally {
        for (const id of ['f1', 'f2']) await clones.delete(id);
        await uppers.delete('f3');
        await rm(outside, { recursive: true, force: true });
      }
    });
  });
});
