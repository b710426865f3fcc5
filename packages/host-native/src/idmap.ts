/**
 * sysbox-libs idMap's host checks, rebuilt: IDMapMountSupported and OverlayfsOnIDMapMountSupported
 * actually ID-map a directory (and mount an overlay on an ID-mapped lower) under the given dir,
 * then undo everything; IDMapMountSupportedOnPath is upstream's statfs(2) deny-list for PrepMounts.
 */
import { mkdir, mkdtemp, rm, statfs } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { MNT_DETACH, loadAddon } from './addon.js';
import { spawnUserNamespace } from './userns.js';

/** A probe's answer; reason says why not (kernel, or the syscall that failed and its errno). */
export interface ProbeResult {
  ok: boolean;
  reason?: string;
  /** Wall time of the probe. */
  ms: number;
}

export interface IdMapProbeOptions {
  /** Defaults to os.release(). */
  kernelRelease?: string;
  /**
   * Map with this user namespace file instead of a fresh one. Tests pass /proc/self/ns/user (the
   * initial namespace, which mount_setattr refuses) to see the probe say no on a syscall failure.
   */
  usernsPath?: string;
}

export function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

/** ID-mapped mounts work on a directory under dir (kernel >= 5.12 and the syscalls succeed). */
export function idMapMountSupported(dir: string, opts: IdMapProbeOptions = {}): Promise<ProbeResult> {
  return probe(dir, false, opts);
}

/** overlayfs mounts with an ID-mapped lower layer under dir (kernel >= 5.19 and it works). */
export function overlayfsOnIdMapMountSupported(
  dir: string,
  opts: IdMapProbeOptions = {},
): Promise<ProbeResult> {
  return probe(dir, true, opts);
}

async function probe(dir: string, onOverlayfs: boolean, opts: IdMapProbeOptions): Promise<ProbeResult> {
  const started = performance.now();
  const done = (ok: boolean, reason?: string): ProbeResult => ({
    ok,
    ...(reason ? { reason } : {}),
    ms: performance.now() - started,
  });
  const rel = opts.kernelRelease ?? release();
  const [major, minor] = onOverlayfs ? [5, 19] : [5, 12];
  if (!kernelAtLeast(rel, major, minor)) return done(false, `kernel ${rel} is older than ${major}.${minor}`);

  let addon;
  try {
    addon = loadAddon();
  } catch (err) {
    return done(false, (err as Error).message);
  }
  const cleanup: Array<() => Promise<void> | void> = [];
  const leftovers: string[] = [];
  let reason: string | undefined;
  try {
    const tmp = await mkdtemp(join(dir, 'sysbox-ovfs-check'));
    // Removed last, and only when nothing is still mounted under it.
    cleanup.push(async () => {
      if (leftovers.length === 0) await rm(tmp, { recursive: true, force: true });
    });
    const merged = join(tmp, 'merged');
    const [lower, upper, work] = ['lower', 'upper', 'work'].map((d) => join(tmp, d)) as [
      string,
      string,
      string,
    ];
    for (const d of onOverlayfs ? [merged, lower, upper, work] : [merged]) await mkdir(d, { mode: 0o700 });

    let usernsFd: number;
    if (opts.usernsPath) {
      usernsFd = openSync(opts.usernsPath, 'r');
      cleanup.push(() => closeSync(usernsFd));
    } else {
      const userns = await spawnUserNamespace();
      usernsFd = userns.fd;
      cleanup.push(() => userns.close());
    }

    const unmount = (target: string) => () => {
      try {
        addon.umount(target, MNT_DETACH);
      } catch (err) {
        leftovers.push(`${target} (${(err as Error).message})`);
      }
    };
    const idMapped = onOverlayfs ? lower : merged;
    addon.idmapMount(idMapped, usernsFd);
    cleanup.push(unmount(idMapped));
    if (onOverlayfs) {
      addon.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
      cleanup.push(unmount(merged));
    }
  } catch (err) {
    reason = (err as Error).message;
  }
  for (const step of cleanup.reverse()) {
    try {
      await step();
    } catch (err) {
      leftovers.push((err as Error).message);
    }
  }
  if (leftovers.length > 0) reason = `${reason ? `${reason}; ` : ''}cleanup failed: ${leftovers.join(', ')}`;
  return done(reason === undefined, reason);
}

const OVERLAYFS_SUPER_MAGIC = 0x794c7630;
const FUSE_SUPER_MAGIC = 0x65735546;
/** Docker Desktop's Linux VM only. */
const FAKEOWNER_MAGIC = 0x6a656a63;
const TMPFS_MAGIC = 0x01021994;
const FS_DENY_LIST = [OVERLAYFS_SUPER_MAGIC, FUSE_SUPER_MAGIC, FAKEOWNER_MAGIC];
const DEV_DENY_LIST = ['/dev/null'];

/**
 * Whether the dir at path can be ID-mapped, by its filesystem (statfs f_type): never overlayfs,
 * FUSE or Docker Desktop's fakeowner, tmpfs only on kernels >= 6.3; never /dev/null (upstream's
 * IDMapMountSupportedOnPath). Throws when path cannot be statfs'd.
 */
export async function idMapMountSupportedOnPath(
  path: string,
  kernelRelease: string = release(),
): Promise<boolean> {
  if (DEV_DENY_LIST.includes(path)) return false;
  const { type } = await statfs(path);
  if (FS_DENY_LIST.includes(type)) return false;
  if (type === TMPFS_MAGIC) return kernelAtLeast(kernelRelease, 6, 3);
  return true;
}
