/**
 * sysbox-libs shiftfs's host checks, rebuilt: ShiftfsSupported and ShiftfsSupportedOnOverlayfs
 * try shiftfs for real under a given dir, as a container would use it, then undo everything.
 *
 * A check makes `sysbox-shiftfs-check*` (0755) with `test` in it, marks `test` with shiftfs on the
 * host (for the overlayfs check, on an overlay mounted there first), then in a new user namespace
 * (root = host uid 165536, as upstream) and mount namespace mounts shiftfs over the mark, creates
 * a file and renames it. The rename is the point: on kernels with a known shiftfs bug it fails
 * with EOVERFLOW although the mount works. Only shiftfs makes the root-owned `test` writable for
 * the namespace's root, so a "yes" means shiftfs shifted ids.
 */
import { chmod, mkdir, mkdtemp, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { MNT_DETACH, loadAddon } from './addon.js';
import type { ProbeResult } from './idmap.js';
import { spawnUserMountNamespace, type IdRange, type UserMountNamespace } from './userns.js';

/** The check's kernel operations, one per step; tests replace one to see the check fail there. */
export interface ShiftfsCheckSteps {
  /** On the host: a shiftfs mark of dir onto itself. */
  mark(dir: string): void;
  /** In the namespace, from its working dir: a shiftfs mount of the marked dir `name` onto itself. */
  mountInUserNamespace(ns: UserMountNamespace, name: string): Promise<unknown>;
  /** In the namespace: create an empty file at a path relative to its working dir. */
  createFile(ns: UserMountNamespace, path: string): Promise<unknown>;
  /** In the namespace: rename(2) from → to, relative to its working dir. */
  renameFile(ns: UserMountNamespace, from: string, to: string): Promise<unknown>;
}

export const kernelShiftfsSteps: ShiftfsCheckSteps = {
  mark: (dir) => loadAddon().mount(dir, dir, 'shiftfs', 0, 'mark'),
  // Relative paths, kept relative (--no-canonicalize): the namespace's root may not search the
  // data root above the check dir, and needs not (upstream opened the data root to 0777 instead).
  mountInUserNamespace: (ns, name) =>
    ns.run('mount', ['--no-canonicalize', '-t', 'shiftfs', '--', name, name]),
  createFile: (ns, path) => ns.run('touch', ['--', path]),
  renameFile: (ns, from, to) => ns.run('mv', ['--no-target-directory', '--', from, to]),
};

export interface ShiftfsCheckOptions {
  /** Replaces some of the kernel steps (tests). */
  steps?: Partial<ShiftfsCheckSteps>;
  /** The namespace's ids; upstream's 0 → 165536, size 65536 by default. */
  ids?: IdRange;
}

const UPSTREAM_IDS: IdRange = { inside: 0, outside: 165536, size: 65536 };
const OVERLAYFS_SUPER_MAGIC = 0x794c7630;
const TMPFS_MAGIC = 0x01021994;

/** shiftfs marks and mounts work under dir, files on them can be created and renamed (upstream ShiftfsSupported). */
export function shiftfsSupported(dir: string, opts: ShiftfsCheckOptions = {}): Promise<ProbeResult> {
  return check(dir, false, opts);
}

/** The same with the mark on an overlayfs mount (upstream ShiftfsSupportedOnOverlayfs). */
export function shiftfsOnOverlayfsSupported(
  dir: string,
  opts: ShiftfsCheckOptions = {},
): Promise<ProbeResult> {
  return check(dir, true, opts);
}

async function check(dir: string, onOverlayfs: boolean, opts: ShiftfsCheckOptions): Promise<ProbeResult> {
  const started = performance.now();
  const steps = { ...kernelShiftfsSteps, ...opts.steps };
  const cleanup: Array<() => Promise<void> | void> = [];
  const leftovers: string[] = [];
  let reason: string | undefined;
  /** Runs one step; a failure becomes the reason, named after the step. */
  const step = async (what: string, fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
    }
  };
  try {
    // As upstream: overlayfs cannot be an overlay's upper layer, and tmpfs is not where marks go.
    const { type } = await statfs(dir);
    if (type === OVERLAYFS_SUPER_MAGIC || type === TMPFS_MAGIC) {
      throw new Error(
        `${dir} is on ${type === TMPFS_MAGIC ? 'tmpfs' : 'overlayfs'}; the check needs a disk filesystem`,
      );
    }
    const addon = loadAddon();
    const tmp = await mkdtemp(join(dir, 'sysbox-shiftfs-check'));
    // Removed last, and only when nothing is still mounted under it.
    cleanup.push(async () => {
      if (leftovers.length === 0) await rm(tmp, { recursive: true, force: true });
    });
    // The namespace's root is "other" here: it must search tmp to reach test.
    await chmod(tmp, 0o755);
    const test = join(tmp, 'test');
    await mkdir(test, { mode: 0o755 });
    const unmount = (target: string) => () => {
      try {
        addon.umount(target, MNT_DETACH);
      } catch (err) {
        leftovers.push(`${target} (${(err as Error).message})`);
      }
    };
    if (onOverlayfs) {
      const [lower, upper, work] = ['lower', 'upper', 'work'].map((d) => join(tmp, d)) as [
        string,
        string,
        string,
      ];
      for (const d of [lower, upper, work]) await mkdir(d, { mode: 0o755 });
      await step('overlayfs mount', () =>
        addon.mount('overlay', test, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`),
      );
      cleanup.push(unmount(test));
    }
    await step('shiftfs mark', () => steps.mark(test));
    cleanup.push(unmount(test));
    const ns = await spawnUserMountNamespace({ ids: opts.ids ?? UPSTREAM_IDS, cwd: tmp });
    // Ending the holder ends its mount namespace, and with it the shiftfs mount made inside.
    cleanup.push(() => ns.close());
    await step('shiftfs mount in a user namespace', () => steps.mountInUserNamespace(ns, 'test'));
    await step('file create on shiftfs', () => steps.createFile(ns, 'test/testfile'));
    await step('file rename on shiftfs (EOVERFLOW here is a known shiftfs kernel bug)', () =>
      steps.renameFile(ns, 'test/testfile', 'test/testfile2'),
    );
  } catch (err) {
    reason = (err as Error).message;
  }
  for (const undo of cleanup.reverse()) {
    try {
      await undo();
    } catch (err) {
      leftovers.push((err as Error).message);
    }
  }
  if (leftovers.length > 0) reason = `${reason ? `${reason}; ` : ''}cleanup failed: ${leftovers.join(', ')}`;
  return { ok: reason === undefined, ...(reason ? { reason } : {}), ms: performance.now() - started };
}
