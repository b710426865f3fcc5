/**
 * Host facts the gateway reads: ID-mapped mount support, tried for real as upstream does (a
 * throw-away dir under the data root is ID-mapped, and an overlay mounted on an ID-mapped lower,
 * then everything is undone), kernel version gates, distro and kernel-header paths, the read-only
 * kernel-header and /lib/modules mounts every container gets, and per-path checks (overlayfs, netns
 * inode, upper dir, whether a mount source can be ID-mapped) used while serving calls. Whether
 * shiftfs works is shiftfs-mgr's finding (shiftfs-support.ts).
 */
import { lstat, mkdir, readFile, readdir, readlink, stat, statfs } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { SysboxError, type OciMount } from '@sysbox-mgr-ts/contracts';
import { run } from '@sysbox-mgr-ts/exec/run';
import {
  idMapMountSupported,
  idMapMountSupportedOnPath,
  overlayfsOnIdMapMountSupported,
  type IdMapProbeOptions,
  type ProbeResult,
} from '@sysbox-mgr-ts/host-native';
import { overlayOptions, readMountInfo, topMountAt } from '@sysbox-mgr-ts/mountinfo';

const OVERLAYFS_SUPER_MAGIC = 0x794c7630;

/** `6.18.44-fc` → [6, 18]. */
export function kernelVersion(rel: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) throw new SysboxError('internal', `cannot read a kernel version from ${JSON.stringify(rel)}`);
  return [Number(m[1]), Number(m[2])];
}

export function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const [a, b] = kernelVersion(rel);
  return a > major || (a === major && b >= minor);
}

/** The `ID=` of an os-release(5) file, unquoted; undefined when there is none. */
export function distroFromOsRelease(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^\s*ID\s*=\s*(.*)$/.exec(line);
    if (m) return m[1]!.trim().replace(/^["']|["']$/g, '') || undefined;
  }
  return undefined;
}

/** The distro of a root filesystem, from its etc/os-release or usr/lib/os-release. */
export async function distroOf(root: string): Promise<string | undefined> {
  for (const file of ['etc/os-release', 'usr/lib/os-release']) {
    try {
      const id = distroFromOsRelease(await readFile(join(root, file), 'utf8'));
      if (id) return id;
    } catch {
      // a rootfs without os-release is fine: no distro, no softlinks
    }
  }
  return undefined;
}

/** Where a distro expects the kernel headers (sysbox-libs linuxUtils.GetLinuxHeaderPath). */
export function linuxHeaderPath(distro: string | undefined, kernelRelease: string): string {
  if (distro && ['redhat', 'centos', 'rocky', 'almalinux', 'fedora', 'amzn'].includes(distro)) {
    return posix.join('/usr/src/kernels', kernelRelease);
  }
  if (distro === 'arch' || distro === 'flatcar') return posix.join('/lib/modules', kernelRelease, 'build');
  return posix.join('/usr/src', `linux-headers-${kernelRelease}`);
}

const RO_BIND = ['ro', 'rbind', 'rprivate'];

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Every symlink under dir, resolved one level, dangling ones left out. */
async function symlinkTargetsUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isSymbolicLink()) {
        const dest = await readlink(p);
        const real = dest.startsWith('/') ? dest : join(dirname(p), dest);
        if (await exists(real)) out.push(real);
      } else if (entry.isDirectory()) {
        await walk(p);
      }
    }
  };
  await walk(dir);
  return out;
}

/** Longest common path of absolute paths, never cutting a component in half. */
export function longestCommonPath(paths: readonly string[]): string {
  if (paths.length === 0) return '';
  const split = paths.map((p) => p.split('/'));
  const first = split[0]!;
  let n = first.length;
  for (const parts of split.slice(1)) {
    let i = 0;
    while (i < n && i < parts.length && parts[i] === first[i]) i++;
    n = i;
  }
  return first.slice(0, n).join('/') || '/';
}

/**
 * A read-only bind mount of source, plus one mount per top-level dir under `filter` that symlinks
 * inside source point to (Ubuntu's header dirs link into a sibling linux-headers-*-common dir).
 */
export async function readOnlyMountsFollowingSymlinks(source: string, filter: string): Promise<OciMount[]> {
  const mounts: OciMount[] = [{ source, destination: source, type: 'bind', options: RO_BIND }];
  const targets = (await symlinkTargetsUnder(source)).filter((t) => t.startsWith(`${filter}/`));
  const byTopDir = new Map<string, string[]>();
  for (const t of targets) {
    const top = posix.join(filter, t.slice(filter.length + 1).split('/')[0]!);
    byTopDir.set(top, [...(byTopDir.get(top) ?? []), t]);
  }
  for (const paths of byTopDir.values()) {
    const lcp = posix.normalize(longestCommonPath(paths));
    if (lcp === source || lcp.startsWith(`${source}/`)) continue;
    if (!mounts.some((m) => m.source === lcp))
      mounts.push({ source: lcp, destination: lcp, type: 'bind', options: RO_BIND });
  }
  return mounts;
}

export interface HostFacts {
  kernelRelease: string;
  hostDistro: string | undefined;
  hostKernelHdrPath: string;
  linuxHeaderMounts: OciMount[];
  libModMounts: OciMount[];
  idMapMountOk: boolean;
  overlayfsOnIDMapMountOk: boolean;
  binfmtMiscNamespaced: boolean;
  /** Why binfmtMiscNamespaced is what it is (logged at start). */
  binfmtMiscReason?: string;
}

export interface ProbeOptions {
  disableIdmappedMount: boolean;
  disableOvfsOnIdmappedMount: boolean;
  /** Where the ID-mapped mount probes make their throw-away dir (upstream: /var/lib/sysbox); made 0700 if missing. */
  dataRoot?: string;
  /** Told each probe's answer and time; a "no" with its reason at warn. */
  log?: ProbeLogger;
  /** Root of the host filesystem to read (tests point it at a fixture). */
  hostRoot?: string;
  kernelRelease?: string;
  /** Passed to the ID-mapped mount probes (tests: a user namespace the kernel refuses). */
  idMapProbe?: Pick<IdMapProbeOptions, 'usernsPath'>;
  /**
   * Runs `modprobe binfmt_misc` (tests inject a fake). Default: the real one through
   * packages/exec on the real host, none when `hostRoot` is a fixture.
   */
  runCommand?: (file: string, args: readonly string[]) => Promise<unknown>;
}

export interface ProbeLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const DEFAULT_DATA_ROOT = '/var/lib/sysbox';

/**
 * upstream's checkIDMapMountSupport: IDMapMountSupported and OverlayfsOnIDMapMountSupported run in
 * the data root, each skipped when its disable flag is set (and the overlay one when ID-mapped
 * mounts are off). Both run at once: each has its own dir and user namespace.
 */
async function probeIdMapMounts(
  opts: ProbeOptions,
  kernelRelease: string,
): Promise<{ idMap: boolean; ovfs: boolean }> {
  if (opts.disableIdmappedMount) return { idMap: false, ovfs: false };
  const dir = opts.dataRoot ?? DEFAULT_DATA_ROOT;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const probeOpts: IdMapProbeOptions = { kernelRelease, ...opts.idMapProbe };
  const skipped: Promise<ProbeResult> = Promise.resolve({
    ok: false,
    reason: 'disabled (--disable-ovfs-on-idmapped-mount)',
    ms: 0,
  });
  const [idMap, ovfs] = await Promise.all([
    idMapMountSupported(dir, probeOpts),
    opts.disableOvfsOnIdmappedMount ? skipped : overlayfsOnIdMapMountSupported(dir, probeOpts),
  ]);
  const tell = (what: string, r: ProbeResult): void => {
    const ms = Math.round(r.ms * 10) / 10;
    if (r.ok) opts.log?.info({ probe: what, dir, ms }, `${what}: supported`);
    else opts.log?.warn({ probe: what, dir, ms, reason: r.reason }, `${what}: not supported: ${r.reason}`);
  };
  tell('ID-mapped mounts', idMap);
  if (!opts.disableOvfsOnIdmappedMount) tell('overlayfs on ID-mapped mounts', ovfs);
  return { idMap: idMap.ok, ovfs: idMap.ok && ovfs.ok };
}

const MODPROBE_TIMEOUT_MS = 10_000;

/**
 * upstream's binfmt_misc decision (newSysboxMgr: linuxUtils.KernelModSupported("binfmt_misc"),
 * then BinfmtMiscNamespacingSupported): `modprobe binfmt_misc`, its failure ignored (modprobe
 * missing included); then a line of /proc/modules containing `binfmt_misc`; then a kernel >= 6.7
 * (binfmt_misc sandboxed mounts, 21ca59b365c0). A binfmt_misc built into the kernel is in no
 * /proc/modules line, so upstream decides no there, and so do we. Where /proc/modules cannot be
 * read (a kernel without module support) upstream refuses to start; we answer no and say why.
 */
export async function binfmtMiscNamespaced(opts: {
  hostRoot: string;
  kernelRelease: string;
  runCommand?: (file: string, args: readonly string[]) => Promise<unknown>;
}): Promise<{ ok: boolean; reason: string }> {
  const modprobe = await opts.runCommand?.('modprobe', ['binfmt_misc']).then(
    () => 'modprobe binfmt_misc ran',
    (err: unknown) => `modprobe binfmt_misc failed: ${(err as Error).message}`,
  );
  const modulesPath = join(opts.hostRoot, 'proc/modules');
  let loaded: boolean;
  try {
    loaded = (await readFile(modulesPath, 'utf8')).split('\n').some((line) => line.includes('binfmt_misc'));
  } catch (err) {
    return { ok: false, reason: `cannot read ${modulesPath}: ${(err as Error).message}` };
  }
  const tail = modprobe === undefined ? '' : ` (${modprobe})`;
  if (!loaded) return { ok: false, reason: `binfmt_misc is not a loaded module in ${modulesPath}${tail}` };
  if (!kernelAtLeast(opts.kernelRelease, 6, 7))
    return { ok: false, reason: `kernel ${opts.kernelRelease} is before 6.7 (no binfmt_misc namespacing)` };
  return { ok: true, reason: `binfmt_misc module loaded and kernel ${opts.kernelRelease} >= 6.7` };
}

/** What upstream's newSysboxMgr learns about the host at start. */
export async function probeHost(opts: ProbeOptions): Promise<HostFacts> {
  const root = opts.hostRoot ?? '/';
  const kernelRelease = opts.kernelRelease ?? release();
  const hostDistro = await distroOf(root);
  const hostKernelHdrPath = linuxHeaderPath(hostDistro, kernelRelease);
  const hdrOnHost = join(root, hostKernelHdrPath);
  const linuxHeaderMounts = (await exists(hdrOnHost))
    ? root === '/'
      ? await readOnlyMountsFollowingSymlinks(hostKernelHdrPath, '/usr/src')
      : [{ source: hostKernelHdrPath, destination: hostKernelHdrPath, type: 'bind', options: RO_BIND }]
    : [];
  const libMod = posix.join('/lib/modules', kernelRelease);
  // Not following symlinks: they point at the kernel headers, mounted above.
  const libModMounts = (await exists(join(root, libMod)))
    ? [{ source: libMod, destination: libMod, type: 'bind', options: RO_BIND }]
    : [];
  const idMapped = await probeIdMapMounts(opts, kernelRelease);
  const idMapMountOk = idMapped.idMap;
  const overlayfsOnIDMapMountOk = idMapped.ovfs;
  const binfmt = await binfmtMiscNamespaced({
    hostRoot: root,
    kernelRelease,
    runCommand:
      opts.runCommand ??
      (root === '/' ? (file, args) => run(file, args, { timeout: MODPROBE_TIMEOUT_MS }) : undefined),
  });
  return {
    kernelRelease,
    hostDistro,
    hostKernelHdrPath,
    linuxHeaderMounts,
    libModMounts,
    idMapMountOk,
    overlayfsOnIDMapMountOk,
    binfmtMiscNamespaced: binfmt.ok,
    binfmtMiscReason: binfmt.reason,
  };
}

/** Per-call host checks; an interface so manager tests can stub them. */
export interface HostChecks {
  isOnOverlay(path: string): Promise<boolean>;
  overlayUpperDir(mountPoint: string): Promise<string | undefined>;
  inodeOf(path: string): Promise<number>;
  distroOf(root: string): Promise<string | undefined>;
  idMapMountSupportedOnPath(path: string): Promise<boolean>;
  exists(path: string): Promise<boolean>;
}

export function hostChecks(kernelRelease: string = release()): HostChecks {
  return {
    async isOnOverlay(path) {
      return (await statfs(path)).type === OVERLAYFS_SUPER_MAGIC;
    },
    async overlayUpperDir(mountPoint) {
      const top = topMountAt(await readMountInfo(), mountPoint);
      return top?.fsType === 'overlay' ? overlayOptions(top.superOptions).upperDir : undefined;
    },
    async inodeOf(path) {
      return Number((await stat(path, { bigint: true })).ino);
    },
    distroOf,
    // upstream's deny-list by filesystem type: overlayfs, FUSE, fakeowner; tmpfs before 6.3.
    idMapMountSupportedOnPath: (path) => idMapMountSupportedOnPath(path, kernelRelease),
    // Only a path that is not there is gone: the removal watch releases a container on `false`,
    // so an error that says nothing about the path (EMFILE, EACCES, EIO) must not answer it.
    async exists(path) {
      return lstat(path).then(
        () => true,
        (err: NodeJS.ErrnoException) => err.code !== 'ENOENT' && err.code !== 'ENOTDIR',
      );
    },
  };
}
