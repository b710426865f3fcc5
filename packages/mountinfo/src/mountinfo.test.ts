import { describe, expect, it } from 'vitest';
import {
  mountContaining,
  mountsAt,
  mountsUnder,
  overlayOptions,
  parseMountInfo,
  propagationOf,
  readMountInfo,
  topMountAt,
} from './index.js';

const sample = [
  '22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '30 22 0:25 / /var/lib/docker/overlay2/abc/merged rw,relatime shared:5 - overlay overlay rw,lowerdir=/l/2:/l/1,upperdir=/u/diff,workdir=/u/work,metacopy=on',
  '31 30 0:26 / /var/lib/docker/overlay2/abc/merged/proc rw master:3 - proc proc rw',
  '32 22 0:27 /sub\\040dir /mnt/with\\040space rw unbindable - tmpfs tmpfs rw,size=1024k',
  '33 30 0:25 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/u2/diff,workdir=/u2/work',
].join('\n');

describe('parseMountInfo', () => {
  const mounts = parseMountInfo(sample);
  it('reads every field, unescaping octal', () => {
    expect(mounts).toHaveLength(5);
    const t = mounts[3]!;
    expect(t.root).toBe('/sub dir');
    expect(t.mountPoint).toBe('/mnt/with space');
    expect(t.fsType).toBe('tmpfs');
    expect(t.superOptions).toEqual(['rw', 'size=1024k']);
    expect(t.mountOptions).toEqual(['rw']);
  });
  it('knows propagation', () => {
    expect(mounts.map(propagationOf)).toEqual(['shared', 'shared', 'slave', 'unbindable', 'private']);
  });
  it('finds stacked, contained and nested mounts', () => {
    const merged = '/var/lib/docker/overlay2/abc/merged';
    expect(mountsAt(mounts, merged).map((m) => m.mountId)).toEqual([30, 33]);
    expect(topMountAt(mounts, merged)?.mountId).toBe(33);
    expect(mountContaining(mounts, `${merged}/etc/passwd`)?.mountId).toBe(33);
    expect(mountContaining(mounts, '/etc')?.mountId).toBe(22);
    expect(mountsUnder(mounts, merged).map((m) => m.mountId)).toEqual([31, 33, 30]);
    expect(mountsUnder(mounts, '/var/lib/docker/overlay2/ab')).toEqual([]);
  });
  it('splits overlay options, relative lowerdirs included', () => {
    expect(overlayOptions(mounts[1]!.superOptions)).toEqual({
      lowerDirs: ['/l/2', '/l/1'],
      upperDir: '/u/diff',
      workDir: '/u/work',
      other: ['rw', 'metacopy=on'],
    });
    expect(overlayOptions(mounts[4]!.superOptions).lowerDirs).toEqual(['l/A', 'l/B']);
  });
  it('rejects a malformed line', () => {
    expect(() => parseMountInfo('garbage line')).toThrow(/malformed/);
  });
  it('parses this host', async () => {
    const mounts = await readMountInfo();
    expect(mounts.some((m) => m.mountPoint === '/')).toBe(true);
  });
});
