export {
  loadAddon,
  MNT_DETACH,
  MS_BIND,
  MS_REC,
  MS_UNBINDABLE,
  MS_PRIVATE,
  MS_SLAVE,
  MS_SHARED,
} from './addon.js';
export type { HostNativeAddon } from './addon.js';
export {
  idMapMountSupported,
  overlayfsOnIdMapMountSupported,
  idMapMountSupportedOnPath,
  kernelAtLeast,
} from './idmap.js';
export type { ProbeResult, IdMapProbeOptions } from './idmap.js';
export { shiftfsSupported, shiftfsOnOverlayfsSupported, kernelShiftfsSteps } from './shiftfs.js';
export type { ShiftfsCheckSteps, ShiftfsCheckOptions } from './shiftfs.js';
export { spawnUserNamespace, spawnUserMountNamespace } from './userns.js';
export type { UserNamespace, UserMountNamespace, IdRange } from './userns.js';
export { sdNotify, notify, listenDatagram } from './notify.js';
export type { Datagram, DatagramListener } from './notify.js';
