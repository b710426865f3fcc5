/**
 * The three checks bound to a daemon's configuration, so domain modules take one `HostGuard`
 * and tests pass temp roots and subid files instead of the host's.
 */
import { assertRootfsAllowed } from './rootfs-roots.js';
import { assertIdsDelegated, readDelegatedRanges, type DelegatedIds } from './subid-ranges.js';
import { assertNotSystemDir } from './system-dirs.js';

export interface HostGuardConfig {
  dataRoot: string;
  stateDir?: string;
  /** The data root is always allowed as well. */
  allowedRootfsRoots: readonly string[];
  subuidFile: string;
  subgidFile: string;
}

export interface HostGuard {
  /** The realpath of `path`, unless it is a system dir (see assertNotSystemDir). */
  notSystemDir(path: string, what: string): Promise<string>;
  /** The realpath of `path`, when it is no system dir and lies below an allowed rootfs root. */
  allowedRootfs(path: string, what: string): Promise<string>;
  idsDelegated(ids: DelegatedIds, what: string): Promise<void>;
}

export function createHostGuard(config: HostGuardConfig): HostGuard {
  const roots = [...new Set([...config.allowedRootfsRoots, config.dataRoot])];
  const notSystemDir = (path: string, what: string) =>
    assertNotSystemDir(path, { dataRoot: config.dataRoot, stateDir: config.stateDir, what });
  return {
    notSystemDir,
    async allowedRootfs(path, what) {
      const real = await notSystemDir(path, what);
      return assertRootfsAllowed(real, roots, what);
    },
    async idsDelegated(ids, what) {
      assertIdsDelegated(ids, readDelegatedRanges(config.subuidFile, config.subgidFile), what);
    },
  };
}
