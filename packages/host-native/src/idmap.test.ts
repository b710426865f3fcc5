import { chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMountInfo, mountsUnder } from '@sysbox-mgr-ts/mountinfo';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MNT_DETACH, loadAddon } from './addon.js';
import {
  idMapMountSupported,
  idMapMountSupportedOnPath,
  kernelAtLeast,
  overlayfsOnIdMapMountSupported,
} from './idmap.js';
import { spawnUserNamespace } from './userns.js';

const root = process.getuid?.() === 0;
if (!root) console.log('host-native idmap tests skipped: they mount, and need root');

describe.skipIf(!root)('ID-mapped mount probes (upstream idMap.IDMapMountSupported and friends)', () => {
  let dir: string;
  const addon = loadAddon();
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hn-idmap-'));
  });
  afterAll(async () => {
    for (const m of mountsUnder(await readMountInfo(), dir).reverse()) addon.umount(m.mountPoint, MNT_DETACH);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Nothing mounted under d and nothing left in it. */
  async function expectClean(d: string): Promise<void> {
    expect(mountsUnder(await readMountInfo(), d)).toEqual([]);
    expect(readdirSync(d)).toEqual([]);
  }

  it('says yes on this kernel and leaves no mount or dir behind', async () => {
    const d = join(dir, 'yes');
    mkdirSync(d);
    const idmap = await idMapMountSupported(d);
    const ovfs = await overlayfsOnIdMapMountSupported(d);
    console.log(
      `probe times: IDMapMountSupported ${idmap.ms.toFixed(1)} ms, OverlayfsOnIDMapMountSupported ${ovfs.ms.toFixed(1)} ms`,
    );
    expect(idmap).toMatchObject({ ok: true });
    expect(ovfs).toMatchObject({ ok: true });
    await expectClean(d);
  });

  it('says no, with the failing syscall as the reason, when mount_setattr refuses (initial user namespace)', async () => {
    const d = join(dir, 'refused');
    mkdirSync(d);
    for (const probe of [idMapMountSupported, overlayfsOnIdMapMountSupported]) {
      const r = await probe(d, { usernsPath: '/proc/self/ns/user' });
      expect(r.ok).toBe(false);
      expect(r.reason).toMatch(/^mount_setattr\(MOUNT_ATTR_IDMAP\) .*: .*\((EPERM|EINVAL)\)$/);
    }
    await expectClean(d);
  });

  it('says no on a filesystem that cannot be ID-mapped (ramfs), and cleans up', async () => {
    const d = join(dir, 'ramfs');
    mkdirSync(d);
    addon.mount('ramfs', d, 'ramfs', 0, '');
    try {
      const r = await idMapMountSupported(d);
      const o = await overlayfsOnIdMapMountSupported(d);
      console.log(`on ramfs: ${r.reason}`);
      expect(r).toMatchObject({
        ok: false,
        reason: expect.stringMatching(/^mount_setattr\(MOUNT_ATTR_IDMAP\).*EINVAL/),
      });
      expect(o.ok).toBe(false);
      expect(readdirSync(d)).toEqual([]);
    } finally {
      addon.umount(d, MNT_DETACH);
    }
    await expectClean(d);
  });

  it('gates on the kernel version first (5.12, overlayfs 5.19), touching nothing', async () => {
    const d = join(dir, 'old');
    mkdirSync(d);
    expect(await idMapMountSupported(d, { kernelRelease: '5.11.0' })).toMatchObject({
      ok: false,
      reason: 'kernel 5.11.0 is older than 5.12',
    });
    expect(await overlayfsOnIdMapMountSupported(d, { kernelRelease: '5.18.9' })).toMatchObject({
      ok: false,
      reason: 'kernel 5.18.9 is older than 5.19',
    });
    expect(readdirSync(d)).toEqual([]);
    expect(kernelAtLeast('6.18.44-fc-v509', 5, 19)).toBe(true);
  });

  it('says no with a reason when the probe dir does not exist', async () => {
    const r = await idMapMountSupported(join(dir, 'missing'));
    expect(r).toMatchObject({ ok: false, reason: expect.stringContaining('ENOENT') });
  });

  it('idmapMount really maps: a file of uid 1000 shows as the overflow uid through a 0:0:1 mapping', async () => {
    const d = join(dir, 'mapped');
    mkdirSync(d);
    writeFileSync(join(d, 'f'), 'x');
    chownSync(join(d, 'f'), 1000, 1000);
    writeFileSync(join(d, 'r'), 'x');
    const userns = await spawnUserNamespace();
    try {
      addon.idmapMount(d, userns.fd);
      try {
        expect(statSync(join(d, 'f')).uid).toBe(65534);
        expect(statSync(join(d, 'r')).uid).toBe(0);
      } finally {
        addon.umount(d, MNT_DETACH);
      }
    } finally {
      await userns.close();
    }
    expect(statSync(join(d, 'f')).uid).toBe(1000);
    expect(mountsUnder(await readMountInfo(), d)).toEqual([]);
  });

  it('addon errors carry code, errno and syscall like Node errors', () => {
    try {
      addon.umount(join(dir, 'not-mounted-anywhere'), 0);
      expect.unreachable();
    } catch (err) {
      expect(err).toMatchObject({ code: 'ENOENT', errno: 2, syscall: 'umount2' });
    }
    expect(() => addon.idmapMount(dir, 'x' as unknown as number)).toThrow(TypeError);
  });
});

describe.skipIf(!root)('IDMapMountSupportedOnPath (statfs deny-list, for PrepMounts)', () => {
  let dir: string;
  const addon = loadAddon();
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hn-onpath-'));
  });
  afterAll(async () => {
    for (const m of mountsUnder(await readMountInfo(), dir).reverse()) addon.umount(m.mountPoint, MNT_DETACH);
    rmSync(dir, { recursive: true, force: true });
  });

  it('no on a real overlay mount, yes on tmpfs (kernel >= 6.3, no before), yes on the root fs, no for /dev/null', async () => {
    const [lower, upper, work, merged, tmpfs] = ['lower', 'upper', 'work', 'merged', 'tmpfs'].map((d) =>
      join(dir, d),
    ) as [string, string, string, string, string];
    for (const d of [lower, upper, work, merged, tmpfs]) mkdirSync(d);
    addon.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
    addon.mount('tmpfs', tmpfs, 'tmpfs', 0, 'size=1m');
    try {
      expect(await idMapMountSupportedOnPath(merged)).toBe(false);
      expect(await idMapMountSupportedOnPath(tmpfs, '6.18.0')).toBe(true);
      expect(await idMapMountSupportedOnPath(tmpfs, '6.2.16')).toBe(false);
      expect(await idMapMountSupportedOnPath(lower)).toBe(true);
      expect(await idMapMountSupportedOnPath('/dev/null')).toBe(false);
      await expect(idMapMountSupportedOnPath(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      addon.umount(merged, MNT_DETACH);
      addon.umount(tmpfs, MNT_DETACH);
    }
  });

  it('agrees with the functional probe on tmpfs on this kernel', async () => {
    const tmpfs = join(dir, 'tmpfs2');
    mkdirSync(tmpfs);
    addon.mount('tmpfs', tmpfs, 'tmpfs', 0, 'size=1m');
    try {
      const onPath = await idMapMountSupportedOnPath(tmpfs);
      const functional = await idMapMountSupported(tmpfs);
      expect(functional.ok).toBe(onPath);
    } finally {
      addon.umount(tmpfs, MNT_DETACH);
    }
  });
});
