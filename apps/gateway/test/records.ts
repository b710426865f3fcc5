/** Container records for unit tests: a registered, running container unless told otherwise. */
import { newRecord, type ContainerRecord } from '../src/record.js';

export function aRecord(over: Partial<ContainerRecord> & { id: string }): ContainerRecord {
  const rootfs = `/var/lib/docker/overlay2/${over.id}/merged`;
  return {
    ...newRecord(over.id, rootfs, false, `/var/lib/docker/overlay2/${over.id}`, '2026-01-01T00:00:00.000Z'),
    uidMappings: [{ containerId: 0, hostId: 165536, size: 65536 }],
    gidMappings: [{ containerId: 0, hostId: 165536, size: 65536 }],
    ...over,
  };
}
