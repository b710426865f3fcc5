import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  distroFromOsRelease,
  kernelAtLeast,
  linuxHeaderPath,
  longestCommonPath,
  probeHost,
  readOnlyMountsFollowingSymlinks,
} from './probes.js';
import { removalWatchPath } from './manager.js';

describe('host probes', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gw-probe-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it.each([
    ['5.11.0', 5, 12, false],
    ['5.12.0-generic', 5, 12, true],
    ['5.19.3', 5, 19, true],
    ['6.1.0-18-amd64', 5, 19, true],
    ['4.19.0', 5, 12, false],
    ['6.6.1', 6, 7, false],
  ])('kernel %s >= %i.%i is %s', (rel, maj, min, want) => {
    expect(kernelAtLeast(rel, maj, min)).toBe(want);
  });

  it('reads ID= from os-release, quoted or not', () => {
    expect(distroFromOsRelease('NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n')).toBe('ubuntu');
    expect(distroFromOsRelease('# c\nID="rocky"\n')).toBe('rocky');
    expect(distroFromOsRelease('NAME=x\n')).toBeUndefined();
  });

  it('places kernel headers where each distro expects them', () => {
    expect(linuxHeaderPath('ubuntu', '6.1.0')).toBe('/usr/src/linux-headers-6.1.0');
    expect(linuxHeaderPath('fedora', '6.1.0')).toBe('/usr/src/kernels/6.1.0');
    expect(linuxHeaderPath('arch', '6.1.0')).toBe('/lib/modules/6.1.0/build');
  });

  it('longest common path never cuts a component', () => {
    expect(longestCommonPath(['/root/aba', '/root/aca'])).toBe('/root');
    expect(longestCommonPath(['/usr/src/a/b', '/usr/src/a/c/d'])).toBe('/usr/src/a');
    expect(longestCommonPath(['/usr/src/x'])).toBe('/usr/src/x');
  });

  it('follows header symlinks into a sibling dir under the filter, skipping dangling ones', async () => {
    const src = join(dir, 'src');
    const hdr = join(src, 'linux-headers-6.1.0-amd64');
    const common = join(src, 'linux-headers-6.1.0-common');
    await mkdir(join(common, 'include'), { recursive: true });
    await mkdir(join(common, 'arch'), { recursive: true });
    await mkdir(hdr, { recursive: true });
    await symlink(join(common, 'include'), join(hdr, 'include'));
    await symlink('../linux-headers-6.1.0-common/arch', join(hdr, 'arch'));
    await symlink(join(dir, 'gone'), join(hdr, 'dangling'));
    const mounts = await readOnlyMountsFollowingSymlinks(hdr, src);
    expect(mounts.map((m) => m.source)).toEqual([hdr, common]);
    expect(mounts.every((m) => m.options.join() === 'ro,rbind,rprivate' && m.destination === m.source)).toBe(true);
  });

  it('probeHost gates ID-mapped mounts on 5.12 and overlay on them on 5.19, honouring the disable flags', async () => {
    const root = join(dir, 'host');
    await mkdir(join(root, 'etc'), { recursive: true });
    await mkdir(join(root, 'proc'), { recursive: true });
    await mkdir(join(root, 'lib/modules/5.15.0'), { recursive: true });
    await writeFile(join(root, 'etc/os-release'), 'ID=ubuntu\n');
    await writeFile(join(root, 'proc/filesystems'), 'nodev\tbinfmt_misc\n');
    const f = await probeHost({ hostRoot: root, kernelRelease: '5.15.0', disableIdmappedMount: false, disableOvfsOnIdmappedMount: false });
    expect(f).toMatchObject({ idMapMountOk: true, overlayfsOnIDMapMountOk: false, hostDistro: 'ubuntu', binfmtMiscNamespaced: false });
    expect(f.linuxHeaderMounts).toEqual([]);
    expect(f.libModMounts.map((m) => m.source)).toEqual(['/lib/modules/5.15.0']);
    const g = await probeHost({ hostRoot: root, kernelRelease: '6.8.0', disableIdmappedMount: false, disableOvfsOnIdmappedMount: true });
    expect(g).toMatchObject({ idMapMountOk: true, overlayfsOnIDMapMountOk: false, binfmtMiscNamespaced: true });
    const h = await probeHost({ hostRoot: root, kernelRelease: '6.8.0', disableIdmappedMount: true, disableOvfsOnIdmappedMount: false });
    expect(h).toMatchObject({ idMapMountOk: false, overlayfsOnIDMapMountOk: false });
  });

  it('watches a Docker overlay2 container at its layer dir, not merged', () => {
    expect(removalWatchPath('/var/lib/docker/overlay2/abc/merged')).toBe('/var/lib/docker/overlay2/abc');
    expect(removalWatchPath('/var/lib/containerd/rootfs')).toBe('/var/lib/containerd/rootfs');
  });
});
