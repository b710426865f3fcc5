/** The flags and probes every ContainerConfig carries (upstream mgrConfig), and one container's answer. */
import type { ContainerRecord } from './record.js';
import type { ContainerConfig } from './wire.js';

/** The flags and probes that shape every ContainerConfig (upstream mgrConfig). */
export interface MgrConfig {
  aliasDns: boolean;
  shiftfsOk: boolean;
  shiftfsOnOverlayfsOk: boolean;
  idMapMountOk: boolean;
  overlayfsOnIDMapMountOk: boolean;
  noRootfsCloning: boolean;
  ignoreSysfsChown: boolean;
  allowTrustedXattr: boolean;
  honorCaps: boolean;
  syscontMode: boolean;
  fsuidMapFailOnErr: boolean;
  noInnerImgPreload: boolean;
  noShiftfsOnFuse: boolean;
  relaxedReadOnly: boolean;
  mountBinfmtMisc: boolean;
}

/** A container's ContainerConfig: the flags and probes, plus what its record says. */
export function containerConfig(config: MgrConfig, rec: ContainerRecord): ContainerConfig {
  return {
    aliasDns: config.aliasDns,
    ShiftfsOk: config.shiftfsOk,
    ShiftfsOnOverlayfsOk: config.shiftfsOnOverlayfsOk,
    IDMapMountOk: config.idMapMountOk,
    OverlayfsOnIDMapMountOk: config.overlayfsOnIDMapMountOk,
    noRootfsCloning: config.noRootfsCloning,
    ignoreSysfsChown: config.ignoreSysfsChown,
    allowTrustedXattr: config.allowTrustedXattr,
    honorCaps: config.honorCaps,
    syscontMode: config.syscontMode,
    userns: rec.userns,
    uidMappings: rec.uidMappings,
    gidMappings: rec.gidMappings,
    fsuidMapFailOnErr: config.fsuidMapFailOnErr,
    rootfsUidShiftType: rec.rootfsUidShiftType,
    noShiftfsOnFuse: config.noShiftfsOnFuse,
    relaxedReadOnly: config.relaxedReadOnly,
  };
}
