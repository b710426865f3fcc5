import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountsAt, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { afterAll, describe, expect, it } from 'vitest';
import { createMounter, splitMountOptions } from './mounter.js';

describe("splitMountOptions (mount(8)'s -o, as mount(2) takes it)", () => {
  it('turns the leading per-mount flags into MS_* bits and keeps the data verbatim', () => {
    expect(splitMountOptions('rw,relatime,lowerdir=/a\\,b:/c,upperdir=/u,workdir=/w')).toEqual({
      flags: 1 << 21,
      data: 'lowerdir=/a\\,b:/c,upperdir=/u,workdir=/w',
    });
    expect(splitMountOptions('ro,nosuid,nodev,noexec,lowerdir=/l')).toEqual({
      flags: 0x1 | 0x2 | 0x4 | 0x8,
      data: 'lowerdir=/l',
    });
    expect(splitMountOptions('lowerdir=/l,nodev')).toEqual({ flags: 0, data: 'lowerdir=/l,nodev' });
    expect(splitMountOptions('rw,noatime')).toEqual({ flags: 0x400, data: '' });
  });
});

describe.runIf(process.getuid?.() === 0)('createMounter (syscalls on a pool thread)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rfc-mounter-'));
  const mounter = createMounter({ timeoutMs: 10_000 });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('mounts an overlay with the flags of its -o string, and unmounts it', async () => {
    const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(dir, d)) as [
      string,
      string,
      string,
      string,
    ];
    for (const d of [lower, upper, work, merged]) mkdirSync(d);
    writeFileSync(join(lower, 'f'), 'x');
    await mounter.overlay(
      merged,
      `ro,nosuid,nodev,relatime,lowerdir=${lower},upperdir=${upper},workdir=${work}`,
      undefined,
    );
    const [m] = mountsAt(await readMountInfo(), merged);
    expect(m).toMatchObject({ fsType: 'overlay' });
    expect(m!.mountOptions).toEqual(expect.arrayContaining(['ro', 'nosuid', 'nodev', 'relatime']));
    await mounter.setPropagation(merged, 'private');
    await mounter.unmount(merged);
    expect(mountsAt(await readMountInfo(), merged)).toEqual([]);
  });

  it('a failing syscall is an error naming the call and the errno', async () => {
    await expect(mounter.rbind(join(dir, 'nope'), join(dir, 'nope2'))).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'mount',
    });
    await expect(mounter.unmount(dir)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'umount2' });
  });
});
