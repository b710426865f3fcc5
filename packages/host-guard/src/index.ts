export { createHostGuard, type HostGuard, type HostGuardConfig, type RootsInForce } from './guard.js';
export { hostGuardOptions, runtimeConfigOptions, subidFileOptions } from './options.js';
export { ROOTS_FLAG, SYSBOX_ROOTFS_ROOT, assertRootfsAllowed } from './rootfs-roots.js';
export {
  RUNTIME_DEFAULT_ROOTS,
  dockerdDataRoots,
  readRuntimeRoots,
  type RootfsRoot,
  type RuntimeConfigPaths,
} from './runtime-roots.js';
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
