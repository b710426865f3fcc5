import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { MNT_DETACH, loadAddon } from '@sysbox-mgr-ts/host-native';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  binfmtMiscNamespaced,
  distroFromOsRelease,
  hostChecks,
  kernelAtLeast,
  linuxHeaderPath,
  longestCommonPath,
  probeHost,
  readOnlyMountsFollowingSymlinks,
} from './probes.js';
import { removalWatchPath } from './record.js';

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
    expect(mounts.every((m) => m.options.join() === 'ro,rbind,rprivate' && m.destination === m.source)).toBe(
      true,
    );
  });

  it('probeHost gates ID-mapped mounts on 5.12 and overlay on them on 5.19, honouring the disable flags', async () => {
    const root = join(dir, 'host');
    const dataRoot = join(dir, 'data-gates');
    await mkdir(join(root, 'etc'), { recursive: true });
    await mkdir(join(root, 'proc'), { recursive: true });
    await mkdir(join(root, 'lib/modules/5.15.0'), { recursive: true });
    await writeFile(join(root, 'etc/os-release'), 'ID=ubuntu\n');
    await writeFile(join(root, 'proc/filesystems'), 'nodev\tbinfmt_misc\n');
    await writeFile(join(root, 'proc/modules'), 'binfmt_misc 24576 1 - Live 0x0000000000000000\n');
    const f = await probeHost({
      hostRoot: root,
      dataRoot,
      kernelRelease: '5.15.0',
      disableIdmappedMount: false,
      disableOvfsOnIdmappedMount: false,
    });
    expect(f).toMatchObject({
      idMapMountOk: true,
      overlayfsOnIDMapMountOk: false,
      hostDistro: 'ubuntu',
      binfmtMiscNamespaced: false,
    });
    expect(f.linuxHeaderMounts).toEqual([]);
    expect(f.libModMounts.map((m) => m.source)).toEqual(['/lib/modules/5.15.0']);
    const g = await probeHost({
      hostRoot: root,
      dataRoot,
      kernelRelease: '6.8.0',
      disableIdmappedMount: false,
      disableOvfsOnIdmappedMount: true,
    });
    expect(g).toMatchObject({
      idMapMountOk: true,
      overlayfsOnIDMapMountOk: false,
      binfmtMiscNamespaced: true,
    });
    const h = await probeHost({
      hostRoot: root,
      dataRoot,
      kernelRelease: '6.8.0',
      disableIdmappedMount: true,
      disableOvfsOnIdmappedMount: false,
    });
    expect(h).toMatchObject({ idMapMountOk: false, overlayfsOnIDMapMountOk: false });
    const old = await probeHost({
      hostRoot: root,
      dataRoot,
      kernelRelease: '5.11.0',
      disableIdmappedMount: false,
      disableOvfsOnIdmappedMount: false,
    });
    expect(old).toMatchObject({ idMapMountOk: false, overlayfsOnIDMapMountOk: false });
    expect(await readdir(dataRoot)).toEqual([]);
  });

  // Issue #24: upstream runs `modprobe binfmt_misc` and reads /proc/modules; reading
  // /proc/filesystems decided yes for a built-in binfmt_misc, where upstream decides no.
  it('decides binfmt_misc as upstream: modprobe, then a /proc/modules line, then kernel >= 6.7', async () => {
    const host = async (name: string, files: Record<string, string>) => {
      const root = join(dir, name);
      await mkdir(join(root, 'proc'), { recursive: true });
      for (const [f, text] of Object.entries(files)) await writeFile(join(root, 'proc', f), text);
      return root;
    };
    const calls: string[][] = [];
    const modprobe = async (file: string, args: readonly string[]) => void calls.push([file, ...args]);
    const missing = async () => {
      throw new Error('spawn modprobe ENOENT');
    };
    const loaded = await host('bf-loaded', {
      modules: 'overlay 151552 0 - Live 0x0\nbinfmt_misc 24576 1 - Live 0x0\n',
    });
    const builtIn = await host('bf-builtin', {
      filesystems: 'nodev\tbinfmt_misc\n',
      modules: 'overlay 1 0 - Live 0x0\n',
    });
    const noModules = await host('bf-nomodules', { filesystems: 'nodev\tbinfmt_misc\n' });
    expect(
      await binfmtMiscNamespaced({ hostRoot: loaded, kernelRelease: '6.8.0', runCommand: modprobe }),
    ).toMatchObject({ ok: true });
    expect(calls).toEqual([['modprobe', 'binfmt_misc']]);
    expect(
      await binfmtMiscNamespaced({ hostRoot: loaded, kernelRelease: '6.8.0', runCommand: missing }),
    ).toMatchObject({ ok: true });
    expect(
      await binfmtMiscNamespaced({ hostRoot: loaded, kernelRelease: '6.6.9', runCommand: modprobe }),
    ).toMatchObject({ ok: false, reason: expect.stringContaining('before 6.7') });
    for (const root of [builtIn, noModules]) {
      expect(
        await binfmtMiscNamespaced({ hostRoot: root, kernelRelease: '6.8.0', runCommand: missing }),
      ).toMatchObject({ ok: false });
      const f = await probeHost({
        hostRoot: root,
        dataRoot: join(dir, 'data-bf'),
        kernelRelease: '6.8.0',
        disableIdmappedMount: true,
        disableOvfsOnIdmappedMount: true,
        runCommand: modprobe,
      });
      expect(f.binfmtMiscNamespaced).toBe(false);
    }
    // One real read: this host's /proc/modules (absent on a kernel without module support) and
    // its kernel, no modprobe: an answer with its reason, never a throw.
    const real = await binfmtMiscNamespaced({ hostRoot: '/', kernelRelease: release() });
    expect(real.reason).toMatch(/binfmt_misc|proc\/modules|kernel/);
    expect(real.ok).toBe(
      existsSync('/proc/modules') &&
        kernelAtLeast(release(), 6, 7) &&
        (await readFile('/proc/modules', 'utf8')).includes('binfmt_misc'),
    );
  });

  it('watches a Docker overlay2 container at its layer dir, not merged', () => {
    expect(removalWatchPath('/var/lib/docker/overlay2/abc/merged')).toBe('/var/lib/docker/overlay2/abc');
    expect(removalWatchPath('/var/lib/containerd/rootfs')).toBe('/var/lib/containerd/rootfs');
  });
});

/** What probeHost logged, as [level, msg] pairs. */
function recordingLog(): {
  lines: [string, string, Record<string, unknown>][];
  info(o: object, m: string): void;
  warn(o: object, m: string): void;
} {
  const lines: [string, string, Record<string, unknown>][] = [];
  return {
    lines,
    info: (o, m) => void lines.push(['info', m, o as Record<string, unknown>]),
    warn: (o, m) => void lines.push(['warn', m, o as Record<string, unknown>]),
  };
}

const root = process.getuid?.() === 0;
if (!root) console.log('functional ID-mapped mount probe tests skipped: they mount, and need root');

describe.skipIf(!root)('functional ID-mapped mount probes (upstream checkIDMapMountSupport)', () => {
  let dir: string;
  const addon = root ? loadAddon() : undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gw-idmap-'));
  });
  afterAll(async () => {
    for (const m of mountsUnder(await readMountInfo(), dir).reverse())
      addon!.umount(m.mountPoint, MNT_DETACH);
    await rm(dir, { recursive: true, force: true });
  });
  const flags = { disableIdmappedMount: false, disableOvfsOnIdmappedMount: false };

  it('says yes to both on this kernel, timed, makes the data root 0700 and leaves it empty', async () => {
    const dataRoot = join(dir, 'var/lib/sysbox');
    const log = recordingLog();
    const started = performance.now();
    const f = await probeHost({ ...flags, dataRoot, log });
    const total = performance.now() - started;
    const times = log.lines.map(([, m, o]) => `${m} (${String(o.ms)} ms)`).join('; ');
    console.log(`gateway probes: ${times}; probeHost total ${total.toFixed(1)} ms`);
    expect(f).toMatchObject({ idMapMountOk: true, overlayfsOnIDMapMountOk: true });
    expect(log.lines.map(([l, m]) => [l, m])).toEqual([
      ['info', 'ID-mapped mounts: supported'],
      ['info', 'overlayfs on ID-mapped mounts: supported'],
    ]);
    for (const [, , o] of log.lines) expect(o.ms).toEqual(expect.any(Number));
    expect((await stat(dataRoot)).mode & 0o777).toBe(0o700);
    expect(await readdir(dataRoot)).toEqual([]);
    expect(mountsUnder(await readMountInfo(), dir)).toEqual([]);
  });

  it('says no, logging the failed syscall, when mount_setattr refuses the user namespace', async () => {
    const dataRoot = join(dir, 'refused');
    const log = recordingLog();
    const f = await probeHost({ ...flags, dataRoot, log, idMapProbe: { usernsPath: '/proc/self/ns/user' } });
    expect(f).toMatchObject({ idMapMountOk: false, overlayfsOnIDMapMountOk: false });
    expect(log.lines.map(([l]) => l)).toEqual(['warn', 'warn']);
    expect(log.lines[0]![1]).toMatch(
      /^ID-mapped mounts: not supported: mount_setattr\(MOUNT_ATTR_IDMAP\) .*\((EPERM|EINVAL)\)$/,
    );
    expect(await readdir(dataRoot)).toEqual([]);
  });

  it('says no when the data root is on a filesystem that cannot be ID-mapped (ramfs)', async () => {
    const dataRoot = join(dir, 'ramfs');
    await mkdir(dataRoot);
    addon!.mount('ramfs', dataRoot, 'ramfs', 0, '');
    try {
      const log = recordingLog();
      const f = await probeHost({ ...flags, dataRoot, log });
      expect(f).toMatchObject({ idMapMountOk: false, overlayfsOnIDMapMountOk: false });
      expect(log.lines[0]![1]).toMatch(/not supported: mount_setattr.*EINVAL/);
      expect(await readdir(dataRoot)).toEqual([]);
    } finally {
      addon!.umount(dataRoot, MNT_DETACH);
    }
  });

  it('the disable flags skip the probes: nothing made, nothing logged', async () => {
    const dataRoot = join(dir, 'disabled');
    const log = recordingLog();
    expect(
      await probeHost({ disableIdmappedMount: true, disableOvfsOnIdmappedMount: false, dataRoot, log }),
    ).toMatchObject({
      idMapMountOk: false,
      overlayfsOnIDMapMountOk: false,
    });
    expect(log.lines).toEqual([]);
    const g = await probeHost({
      disableIdmappedMount: false,
      disableOvfsOnIdmappedMount: true,
      dataRoot,
      log,
    });
    expect(g).toMatchObject({ idMapMountOk: true, overlayfsOnIDMapMountOk: false });
    expect(log.lines.map(([, m]) => m)).toEqual(['ID-mapped mounts: supported']);
  });

  it('exists: false only for a path that is not there; an error that says nothing about it is true', async () => {
    const checks = hostChecks('6.18.0');
    const file = join(dir, 'exists-file');
    await writeFile(file, '');
    const loop = join(dir, 'exists-loop');
    await symlink(loop, loop);
    expect(await checks.exists(file)).toBe(true);
    expect(await checks.exists(join(dir, 'exists-missing'))).toBe(false);
    expect(await checks.exists(join(file, 'below-a-file'))).toBe(false);
    // ELOOP and ENAMETOOLONG stand for EMFILE or EIO: the removal watch must not take them for gone.
    expect(await checks.exists(join(loop, 'x'))).toBe(true);
    expect(await checks.exists(join(dir, 'n'.repeat(300)))).toBe(true);
  });

  it('PrepMounts check: a real overlay mount cannot be ID-mapped, a tmpfs can on >= 6.3, a plain dir can', async () => {
    const [lower, upper, work, merged, tmpfs] = ['lower', 'upper', 'work', 'merged', 'tmpfs'].map((d) =>
      join(dir, 'prep', d),
    ) as [string, string, string, string, string];
    for (const d of [lower, upper, work, merged, tmpfs]) await mkdir(d, { recursive: true });
    addon!.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
    addon!.mount('tmpfs', tmpfs, 'tmpfs', 0, 'size=1m');
    try {
      const checks = hostChecks('6.18.0');
      expect(await checks.idMapMountSupportedOnPath(merged)).toBe(false);
      expect(await checks.idMapMountSupportedOnPath(tmpfs)).toBe(true);
      expect(await checks.idMapMountSupportedOnPath(lower)).toBe(true);
      expect(await hostChecks('6.2.0').idMapMountSupportedOnPath(tmpfs)).toBe(false);
    } finally {
      addon!.umount(merged, MNT_DETACH);
      addon!.umount(tmpfs, MNT_DETACH);
    }
  });
});
