/**
 * Turns the original rootfs overlay mount (a mountinfo entry) into the mount of its clone: same
 * lower layers, the clone's upper and work dirs, `metacopy=on` plus `index=on`, the original's
 * per-mount flags and propagation. Pure: no file system access, so every rule is unit-tested.
 */
import { isAbsolute, posix } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import {
  MS_NOATIME,
  MS_NODEV,
  MS_NODIRATIME,
  MS_NOEXEC,
  MS_NOSUID,
  MS_RDONLY,
  MS_RELATIME,
  MS_STRICTATIME,
  MS_SYNCHRONOUS,
} from '@sysbox-mgr-ts/host-native/addon';
import { overlayOptions, propagationOf, type MountEntry, type Propagation } from '@sysbox-mgr-ts/mountinfo';

/**
 * Options forced on the clone. metacopy=on makes a chown copy metadata only; index=on keeps a
 * hard-linked lower file one inode after copy-up, so every name of it ends shifted (README).
 */
export const CLONE_OVERLAY_OPTIONS = ['metacopy=on', 'index=on'] as const;

/**
 * Original options the clone must not inherit: ours replace them, or they conflict with metacopy
 * (metacopy needs redirect_dir, and nfs_export refuses metacopy).
 */
const DROPPED_OPTION_KEYS = new Set(['rw', 'ro', 'metacopy', 'index', 'redirect_dir', 'nfs_export']);

/** Per-mount flags mount(8) accepts in -o and applies as MS_* flags (rw is their absence). */
export const MOUNT_FLAG_OPTIONS: ReadonlyMap<string, number> = new Map([
  ['ro', MS_RDONLY],
  ['rw', 0],
  ['nosuid', MS_NOSUID],
  ['nodev', MS_NODEV],
  ['noexec', MS_NOEXEC],
  ['sync', MS_SYNCHRONOUS],
  ['noatime', MS_NOATIME],
  ['nodiratime', MS_NODIRATIME],
  ['relatime', MS_RELATIME],
  ['strictatime', MS_STRICTATIME],
]);

export interface CloneDirs {
  mergedDir: string;
  diffDir: string;
  workDir: string;
}

export interface ClonePlan {
  origUpperDir: string;
  origWorkDir: string;
  /** Lower layers as absolute paths, top first: what must exist to mount the clone again. */
  lowerDirs: string[];
  /** The -o string for `mount -t overlay`: flags first (MOUNT_FLAG_OPTIONS), then the overlay data. */
  mountOptions: string;
  /** Working directory of the mount when lowerdirs are relative, else undefined. */
  cwd: string | undefined;
  propagation: Propagation;
}

/**
 * The legacy mount(2) call that util-linux 2.38 makes copies at most one page of option data and
 * silently truncates the rest: a cut lowerdir list fails (ENOENT) or, cut on a `:`, mounts with
 * layers missing. So the options must fit in pageSize - 1 bytes, checked before mounting.
 */
export function maxOptionBytes(pageSize: number): number {
  return pageSize - 1;
}

export function planClone(orig: MountEntry, dirs: CloneDirs, pageSize: number): ClonePlan {
  if (orig.fsType !== 'overlay') {
    throw new SysboxError(
      'unsupported',
      `rootfs cloning needs overlayfs; ${orig.mountPoint} is ${orig.fsType}`,
    );
  }
  const parsed = overlayOptions(orig.superOptions);
  if (!parsed.upperDir || !parsed.workDir || parsed.lowerDirs.length === 0) {
    throw new SysboxError(
      'unsupported',
      `overlay at ${orig.mountPoint} has no upperdir, workdir or lowerdir`,
    );
  }
  const origUpperDir = parsed.upperDir;
  const base = relativeLowerBase(parsed.lowerDirs, origUpperDir);
  const lowerDirs = parsed.lowerDirs.map((d) => (base === undefined ? d : posix.join(base, d)));

  const flags = orig.mountOptions.filter((o) => MOUNT_FLAG_OPTIONS.has(o));
  const inherited = parsed.other.filter((o) => !DROPPED_OPTION_KEYS.has(o.split('=')[0]!));
  const build = (lowers: readonly string[]): string =>
    [
      ...flags,
      `lowerdir=${lowers.map(escapeLowerDir).join(':')}`,
      `upperdir=${escapeOption(dirs.diffDir)}`,
      `workdir=${escapeOption(dirs.workDir)}`,
      ...inherited,
      ...CLONE_OVERLAY_OPTIONS,
    ].join(',');

  const limit = maxOptionBytes(pageSize);
  let mountOptions = build(base === undefined ? lowerDirs : parsed.lowerDirs);
  let cwd = base;
  if (Buffer.byteLength(mountOptions) > limit) {
    // The clone's upper/work paths can be longer than the original's: retry with the lowerdirs
    // relative to their deepest common directory, as runtimes do past ~70 layers.
    const common = commonDir(lowerDirs);
    if (common !== '/') {
      const compact = build(lowerDirs.map((d) => posix.relative(common, d) || '.'));
      if (Buffer.byteLength(compact) < Buffer.byteLength(mountOptions)) {
        mountOptions = compact;
        cwd = common;
      }
    }
  }
  const bytes = Buffer.byteLength(mountOptions);
  if (bytes > limit) {
    throw new SysboxError(
      'unsupported',
      `clone of ${orig.mountPoint} needs ${bytes} bytes of mount options (${lowerDirs.length} layers); the kernel takes at most ${limit}`,
    );
  }
  return {
    origUpperDir,
    origWorkDir: parsed.workDir,
    lowerDirs,
    mountOptions,
    cwd,
    propagation: propagationOf(orig),
  };
}

/**
 * Relative lowerdirs (lowerdir=54/fs:44/fs) are relative to the runtime's snapshot dir, which is
 * the upperdir minus as many trailing components as the first lowerdir has (upstream's rule:
 * upper and lowers share a parent in every runtime). Undefined when the lowerdirs are absolute.
 */
export function relativeLowerBase(lowerDirs: readonly string[], upperDir: string): string | undefined {
  const first = lowerDirs[0];
  if (first === undefined || isAbsolute(first)) return undefined;
  let base = upperDir;
  for (let i = 0; i < first.split('/').filter(Boolean).length; i++) base = posix.dirname(base);
  return base;
}

function commonDir(paths: readonly string[]): string {
  const split = paths.map((p) => p.split('/').filter(Boolean));
  const first = split[0] ?? [];
  let n = 0;
  // Stop one short of the shortest path, so no lowerdir becomes the directory itself.
  const max = Math.min(...split.map((s) => s.length)) - 1;
  while (n < max && split.every((s) => s[n] === first[n])) n++;
  return `/${first.slice(0, n).join('/')}`;
}

/** overlayfs splits its data on unescaped `,` and lowerdir on unescaped `:`. */
function escapeOption(path: string): string {
  return path.replace(/[\\,]/g, (c) => `\\${c}`);
}

function escapeLowerDir(path: string): string {
  return escapeOption(path).replace(/:/g, '\\:');
}
