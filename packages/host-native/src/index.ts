export { loadAddon, MNT_DETACH } from './addon.js';
export type { HostNativeAddon } from './addon.js';
export { idMapMountSupported, overlayfsOnIdMapMountSupported, idMapMountSupportedOnPath, kernelAtLeast } from './idmap.js';
export type { ProbeResult, IdMapProbeOptions } from './idmap.js';
export { spawnUserNamespace } from './userns.js';
export type { UserNamespace } from './userns.js';
export { sdNotify, notify, listenDatagram } from './notify.js';
export type { Datagram, DatagramListener } from './notify.js';
