import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountsAt, mountsUnder, propagationOf, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { afterAll, describe, expect, it } from 'vitest';
import { MNT_DETACH, MS_BIND, MS_PRIVATE, MS_REC, MS_SHARED, loadAddon } from './addon.js';

describe.runIf(process.getuid?.() === 0)('mountAsync / umountAsync (syscalls on a pool thread)', () => {
  const addon = loadAddon();
  const dir = mkdtempSync(join(tmpdir(), 'hn-mount-'));
  afterAll(async () => {
    for (const m of mountsUnder(await readMountInfo(), dir).reverse()) addon.umount(m.mountPoint, MNT_DETACH);
    rmSync(dir, { recursive: true, force: true });
  });
  const fresh = (name: string) => {
    const source = join(dir, `${name}-src`);
    const target = join(dir, `${name}-dst`);
    mkdirSync(source);
    mkdirSync(target);
    writeFileSync(join(source, 'file'), name);
    return { source, target };
  };

  it('binds recursively, changes propagation and unmounts, as the sync calls do', async () => {
    const { source, target } = fresh('bind');
    mkdirSync(join(source, 'inner'));
    addon.mount('tmpfs', join(source, 'inner'), 'tmpfs', 0, 'size=1m');
    await addon.mountAsync(source, target, '', MS_BIND | MS_REC, '');
    expect(readFileSync(join(target, 'file'), 'utf8')).toBe('bind');
    // Recursive: the tmpfs under the source shows under the target too.
    expect(mountsAt(await readMountInfo(), join(target, 'inner'))).toHaveLength(1);

    await addon.mountAsync('', target, '', MS_PRIVATE, '');
    expect(propagationOf(mountsAt(await readMountInfo(), target)[0]!)).toBe('private');
    await addon.mountAsync('', target, '', MS_SHARED, '');
    expect(propagationOf(mountsAt(await readMountInfo(), target)[0]!)).toBe('shared');

    await addon.umountAsync(target, MNT_DETACH);
    expect(mountsUnder(await readMountInfo(), target)).toEqual([]);
    addon.umount(join(source, 'inner'), 0);
  });

  it('rejects with the errno, as a Node error, and mounts nothing', async () => {
    const { source } = fresh('err');
    await expect(addon.mountAsync(source, join(dir, 'missing'), '', MS_BIND, '')).rejects.toMatchObject({
      code: 'ENOENT',
      errno: 2,
      syscall: 'mount',
      message: expect.stringContaining(`on ${join(dir, 'missing')}`),
    });
    await expect(addon.umountAsync(source, 0)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'umount2' });
    await expect(addon.mountAsync(source, source, 'no-such-fs', 0, '')).rejects.toMatchObject({
      code: 'ENODEV',
    });
    expect(mountsUnder(await readMountInfo(), dir)).toEqual([]);
  });

  it('refuses arguments of the wrong type before queueing anything', () => {
    expect(() => addon.mountAsync('a', 'b', '', 'x' as unknown as number, '')).toThrow(TypeError);
    expect(() => addon.umountAsync(1 as unknown as string, 0)).toThrow(/target must be a string/);
  });

  it('many at once: each answers for its own target', async () => {
    const pairs = Array.from({ length: 16 }, (_, i) => fresh(`many${i}`));
    await Promise.all(pairs.map((p) => addon.mountAsync(p.source, p.target, '', MS_BIND, '')));
    pairs.forEach((p, i) => expect(readFileSync(join(p.target, 'file'), 'utf8')).toBe(`many${i}`));
    await Promise.all(pairs.map((p) => addon.umountAsync(p.target, 0)));
    expect(mountsUnder(await readMountInfo(), dir)).toEqual([]);
  });
});
