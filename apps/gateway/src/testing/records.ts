/** Container records for unit tests: a registered, running container unless told otherwise. */
import type { ContainerRecord } from '../record.js';

export function aRecord(over: Partial<ContainerRecord> & { id: string }): ContainerRecord {
  return {
    state: 'started',
    rootfs: `/var/lib/docker/overlay2/${over.id}/merged`,
    rootfsOnOvfs: false,
    rmWatchPath: `/var/lib/docker/overlay2/${over.id}`,
    userns: '',
    netns: '',
    netnsInode: 0,
    uidMappings: [{ containerId: 0, hostId: 165536, size: 65536 }],
    gidMappings: [{ containerId: 0, hostId: 165536, size: 65536 }],
    subidAllocated: false,
    rootfsCloned: false,
    requested: { subid: false, clone: false, shiftfs: [] },
    rootfsUidShiftType: 0,
    rootfsOvfsUpper: '',
    rootfsOvfsUpperChowned: false,
    mountsPrepped: false,
    volumeKinds: [],
    containerMounts: [],
    shiftfsMarks: [],
    autoRemove: false,
    registeredAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    ...over,
  };
}
