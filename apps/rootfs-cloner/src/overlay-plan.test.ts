import { describe, expect, it } from 'vitest';
import { parseMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { planClone, relativeLowerBase } from './overlay-plan.js';

const dirs = {
  mergedDir: '/d/rootfs/c1/overlay2/merged',
  diffDir: '/d/rootfs/c1/overlay2/diff',
  workDir: '/d/rootfs/c1/overlay2/work',
};
const entry = (optional: string, mountOpts: string, superOpts: string, fsType = 'overlay') =>
  parseMountInfo(
    `100 26 0:50 / /run/c1/rootfs ${mountOpts} ${optional} - ${fsType} overlay ${superOpts}`,
  )[0]!;

describe('planClone', () => {
  it('keeps lowerdirs, flags and other options, swaps upper/work, adds metacopy and index', () => {
    const p = planClone(
      entry(
        'shared:7',
        'rw,nosuid,nodev,relatime',
        'rw,lowerdir=/s/2/fs:/s/1/fs,upperdir=/s/3/fs,workdir=/s/3/work,redirect_dir=off,xino=off,uuid=on',
      ),
      dirs,
      4096,
    );
    expect(p.mountOptions).toBe(
      'rw,nosuid,nodev,relatime,lowerdir=/s/2/fs:/s/1/fs,upperdir=/d/rootfs/c1/overlay2/diff,workdir=/d/rootfs/c1/overlay2/work,xino=off,uuid=on,metacopy=on,index=on',
    );
    expect(p).toMatchObject({
      origUpperDir: '/s/3/fs',
      origWorkDir: '/s/3/work',
      lowerDirs: ['/s/2/fs', '/s/1/fs'],
      cwd: undefined,
      propagation: 'shared',
    });
  });

  it.each([
    ['master:3', 'slave'],
    ['unbindable', 'unbindable'],
    ['', 'private'],
  ])('carries propagation %s as %s', (optional, want) => {
    const p = planClone(entry(optional, 'ro', 'ro,lowerdir=/l,upperdir=/u,workdir=/w'), dirs, 4096);
    expect(p.propagation).toBe(want);
    expect(p.mountOptions.startsWith('ro,lowerdir=')).toBe(true);
  });

  it('resolves relative lowerdirs from the base of the upperdir and mounts from there', () => {
    const p = planClone(
      entry('', 'rw', 'rw,lowerdir=54/fs:44/fs,upperdir=/snap/55/fs,workdir=/snap/55/work'),
      dirs,
      4096,
    );
    expect(p.cwd).toBe('/snap');
    expect(p.lowerDirs).toEqual(['/snap/54/fs', '/snap/44/fs']);
    expect(p.mountOptions).toContain('lowerdir=54/fs:44/fs,');
  });

  it('rejects a non-overlay rootfs and an overlay without upper as unsupported', () => {
    expect(() => planClone(entry('', 'rw', 'rw', 'ext4'), dirs, 4096)).toThrow(
      expect.objectContaining({ code: 'unsupported' }),
    );
    expect(() => planClone(entry('', 'rw', 'rw,lowerdir=/a:/b'), dirs, 4096)).toThrow(
      expect.objectContaining({ code: 'unsupported' }),
    );
  });

  it('makes long absolute lowerdirs relative to their common dir to fit a page, else refuses', () => {
    const lowers = Array.from(
      { length: 60 },
      (_, i) => `/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/${1000 + i}/fs`,
    );
    const orig = entry('', 'rw', `rw,lowerdir=${lowers.join(':')},upperdir=/u/fs,workdir=/u/work`);
    const p = planClone(orig, dirs, 4096);
    expect(p.cwd).toBe('/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots');
    expect(p.mountOptions).toContain('lowerdir=1000/fs:1001/fs:');
    expect(Buffer.byteLength(p.mountOptions)).toBeLessThanOrEqual(4095);
    expect(p.lowerDirs).toEqual(lowers);

    const scattered = Array.from({ length: 40 }, (_, i) => `/layer-${i}-${'x'.repeat(100)}`);
    expect(() =>
      planClone(entry('', 'rw', `rw,lowerdir=${scattered.join(':')},upperdir=/u,workdir=/w`), dirs, 4096),
    ).toThrow(/kernel takes at most 4095/);
  });

  it('escapes separators inside paths', () => {
    const p = planClone(
      entry('', 'rw', 'rw,lowerdir=/a\\:b,upperdir=/u,workdir=/w'),
      { ...dirs, diffDir: '/d/x,y' },
      4096,
    );
    expect(p.mountOptions).toContain('lowerdir=/a\\:b,upperdir=/d/x\\,y,');
  });
});

describe('relativeLowerBase', () => {
  it.each([
    [['54/fs', '44/fs'], '/a/snapshots/55/fs', '/a/snapshots'],
    [['l/ABC'], '/var/lib/docker/overlay2/x/diff', '/var/lib/docker/overlay2'],
    [['/abs/1'], '/u', undefined],
  ])('%j with upper %s -> %s', (lowers, upper, want) => {
    expect(relativeLowerBase(lowers, upper)).toBe(want);
  });
});
