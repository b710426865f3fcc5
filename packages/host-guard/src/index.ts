export { createHostGuard, type HostGuard, type HostGuardConfig } from './guard.js';
export { hostGuardOptions, subidFileOptions } from './options.js';
export { DEFAULT_ROOTFS_ROOTS, assertRootfsAllowed } from './rootfs-roots.js';
export {
  MAPPED_RANGE,
  assertIdsDelegated,
  parseDelegatedRanges,
  readDelegatedRanges,
  type DelegatedIds,
  type DelegatedRanges,
  type IdRange,
} from './subid-ranges.js';
export {
  DEFAULT_STATE_DIRS,
  SYSTEM_DIRS,
  SYSTEM_TREES,
  assertNotSystemDir,
  type SystemDirContext,
} from './system-dirs.js';
