/**
 * The three checks bound to a daemon's configuration, so domain modules take one `HostGuard`
 * and tests pass temp roots, runtime config files and subid files instead of the host's.
 */
import { ROOTS_FLAG, SYSBOX_ROOTFS_ROOT, rootfsBelow, rootfsRefusal } from './rootfs-roots.js';
import { readRuntimeRoots, type RootfsRoot, type RuntimeConfigPaths } from './runtime-roots.js';
import { assertIdsDelegated, readDelegatedRanges, type DelegatedIds } from './subid-ranges.js';
import { assertNotSystemDir } from './system-dirs.js';

export interface HostGuardConfig extends RuntimeConfigPaths {
  dataRoot: string;
  stateDir?: string;
  /**
   * Roots allowed beyond what the runtimes' config files declare (`--allowed-rootfs-roots`).
   * The data root and sysbox's own store are always allowed as well.
   */
  allowedRootfsRoots: readonly string[];
  subuidFile: string;
  subgidFile: string;
}

/** The rootfs roots in force, each with its source, and notes on config files that could not be read. */
export interface RootsInForce {
  roots: RootfsRoot[];
  notes: string[];
}

export interface HostGuard {
  /** The realpath of `path`, unless it is a system dir (see assertNotSystemDir). */
  notSystemDir(path: string, what: string): Promise<string>;
  /**
   * The realpath of `path`, when it is no system dir and lies below an allowed rootfs root. On a
   * miss the runtimes' config files are read again before the refusal is decided.
   */
  allowedRootfs(path: string, what: string): Promise<string>;
  /** The roots as last read (read now on the first call): a daemon logs them at start. */
  rootsInForce(): Promise<RootsInForce>;
  idsDelegated(ids: DelegatedIds, what: string): Promise<void>;
}

export function createHostGuard(config: HostGuardConfig): HostGuard {
  const notSystemDir = (path: string, what: string) =>
    assertNotSystemDir(path, { dataRoot: config.dataRoot, stateDir: config.stateDir, what });
  const read = async (): Promise<RootsInForce> => {
    const runtime = await readRuntimeRoots(config);
    const all: RootfsRoot[] = [
      ...config.allowedRootfsRoots.map((path) => ({ path, source: ROOTS_FLAG })),
      ...runtime.roots,
      SYSBOX_ROOTFS_ROOT,
      { path: config.dataRoot, source: 'the data root' },
    ];
    const seen = new Set<string>();
    return { roots: all.filter((r) => !seen.has(r.path) && seen.add(r.path)), notes: runtime.notes };
  };
  let current: Promise<RootsInForce> | undefined;
  const rootsInForce = () => (current ??= read());
  return {
    notSystemDir,
    rootsInForce,
    async allowedRootfs(path, what) {
      const real = await notSystemDir(path, what);
      let inForce = await rootsInForce();
      let below = await rootfsBelow(real, inForce.roots, what);
      if (!below.allowed) {
        // Read the host's config again before refusing: a data-root moved since the last read
        // counts at once, with no watch to race (see the README).
        inForce = await (current = read());
        below = await rootfsBelow(real, inForce.roots, what);
      }
      if (!below.allowed) throw rootfsRefusal(what, path, below.real, inForce.roots, inForce.notes);
      return below.real;
    },
    async idsDelegated(ids, what) {
      assertIdsDelegated(ids, readDelegatedRanges(config.subuidFile, config.subgidFile), what);
    },
  };
}
