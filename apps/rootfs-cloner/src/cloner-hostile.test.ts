/**
 * The cloner against real overlay mounts (root in a VM) and a real nats-server for its state:
 * hostile requests and forged records.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootfsService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { run } from '@sysbox-mgr-ts/exec';
import { describe, expect, it } from 'vitest';
import { CloneRecord, UpperRecord } from './cloner.js';
import { buildRuntimeRootfs, owners, unmountAllUnder } from '../test/rootfs.js';
import { OFFSET, exists, useClonerRig } from '../test/cloner-rig.js';
describe('rootfs cloner on real overlay mounts', () => {
  const rig = useClonerRig();
  const { makeCloner, nats, setup } = rig;

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
        const merged = join(rig.base, 'sneaky/rootfs');
        await mkdir(merged, { recursive: true });
        await mkdir(join(rig.base, 'sneaky/upper'));
        await mkdir(join(rig.base, 'sneaky/work'));
        await run(
          'mount',
          [
            '-t',
            'overlay',
            'overlay',
            '-o',
            `lowerdir=${foreign.lowerDirs[0]},upperdir=${join(rig.base, 'sneaky/upper')},workdir=${join(rig.base, 'sneaky/work')}`,
            merged,
          ],
          { timeout: 10_000 },
        );
        await expect(cloner.createClone('h2', merged)).rejects.toMatchObject({
          code: 'invalid-request',
          message: expect.stringContaining('lower dir'),
        });
        expect(await exists(join(rig.dataRoot, 'rootfs', 'h1'))).toBe(false);
        expect(await exists(join(rig.dataRoot, 'rootfs', 'h2'))).toBe(false);
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
      const { rootfs } = await cloner.createClone('h3', rig.fx.rootfs);
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
        await expect(cloner.shiftUpper('h3', rig.fx.upperDir, u, g), `${u}:${g}`).rejects.toMatchObject({
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
      const decoy = join(rig.base, 'decoy');
      await mkdir(join(decoy, 'overlay2'), { recursive: true });
      await writeFile(join(decoy, 'keep'), 'host data');
      const kv = await openBucket(nats.nc, rootfsService.bucket);
      const clones = createStateStore(kv, { node: 'forged', namespace: 'clone', schema: CloneRecord });
      const uppers = createStateStore(kv, { node: 'forged', namespace: 'upper', schema: UpperRecord });
      const forged: CloneRecord = {
        id: 'f1',
        origRootfs: rig.fx.rootfs,
        cloneDir: decoy,
        mergedDir: join(decoy, 'overlay2/merged'),
        diffDir: join(decoy, 'overlay2/diff'),
        workDir: join(decoy, 'overlay2/work'),
        origUpperDir: rig.fx.upperDir,
        origWorkDir: rig.fx.workDir,
        lowerDirs: rig.fx.lowerDirs,
        mountOptions: `lowerdir=${rig.fx.lowerDirs.join(':')},upperdir=${join(decoy, 'overlay2/diff')},workdir=${join(decoy, 'overlay2/work')}`,
        propagation: 'private',
        uidOffset: OFFSET,
        gidOffset: OFFSET,
        chowned: true,
        bindToSelfActive: true,
        createdAt: new Date().toISOString(),
      };
      await clones.create('f1', forged);
      // Right dirs, but a revert that would shift the clone down past root.
      const derived = join(rig.dataRoot, 'rootfs', 'f2', 'overlay2');
      await clones.create('f2', {
        ...forged,
        id: 'f2',
        cloneDir: join(rig.dataRoot, 'rootfs', 'f2'),
        mergedDir: join(derived, 'merged'),
        diffDir: join(derived, 'diff'),
        workDir: join(derived, 'work'),
        mountOptions: `lowerdir=${rig.fx.lowerDirs.join(':')},upperdir=${join(derived, 'diff')},workdir=${join(derived, 'work')}`,
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
        const rootfsOwners = await owners(rig.fx.rootfs);
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
        expect(await owners(rig.fx.rootfs)).toEqual(rootfsOwners);
        expect((await stat(outside)).uid).toBe(0);
        expect(mountsUnder(await readMountInfo(), decoy)).toEqual([]);
        expect(mountsAt(await readMountInfo(), rig.fx.rootfs).length).toBe(1);
      } finally {
        for (const id of ['f1', 'f2']) await clones.delete(id);
        await uppers.delete('f3');
        await rm(outside, { recursive: true, force: true });
      }
    });
  });
});
