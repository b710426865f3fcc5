/**
 * What a container record of an earlier boot becomes (issue #25). After a reboot Docker restarts a
 * container with the same id and rootfs, and its record, kept in KV, still says it runs: Register
 * answered "redundant container registration". Upstream's manager starts empty at boot. Here a
 * record of an earlier boot is taken for what it is, a container that stopped when the host went
 * down, and is turned into the record Unregister would have left, except for what a reboot undid:
 *
 * - kept, because they are on disk and a restarted container (same id) wants them back: its
 *   volumes (an inner Docker's images), its subid range (the volumes' files are owned by it), its
 *   ReqMounts answer; a Register of the id restarts it with them, a removal releases them;
 * - undone on disk as Unregister does: the upper-dir chown of an ID-mapped rootfs, the chown of
 *   prepared mount sources;
 * - forgotten, because mounts do not survive a reboot: shiftfs marks (shiftfs-mgr drops its own
 *   when their mounts are gone) and the rootfs clone (rootfs-cloner drops clones of an earlier
 *   boot and deletes their dirs); the clone stays an intent (`requested.clone`), so a removal
 *   still asks for it to go and a restart's ReqCloneRootfs makes a new one over the new rootfs;
 * - not synced out: the rootfs the volumes would be copied into is not mounted after a reboot;
 * - watched at the runtime's own work dir when it had a clone: the clone's watch path, the
 *   overlay's `work/work` shown through the clone's bind (manager.ts, adoptClone), is in the
 *   runtime's own work dir once the bind is gone, and the runtime's mount of the overlay for the
 *   restart deletes and re-creates it: a poll in that instant released the restarting container
 *   and its volumes. The work dir itself goes only when the runtime removes the container.
 *
 * Pure: the manager runs the plan (manager.ts, `settleBoot`), the gateway at start for every record
 * and Register for the one it meets (startBootReconcile).
 */
import { posix } from 'node:path';
import { bootOf } from '@sysbox-mgr-ts/kv-state';
import type { ContainerRecord } from './record.js';

export interface RebootPlan {
  /** The record once the steps below are done: stopped, stamped with this boot, claiming no mount. */
  record: ContainerRecord;
  /** The upper dir of an ID-mapped overlay rootfs is still chowned: revert it (rootfs-cloner). */
  revertUpper: boolean;
  /** Mount sources are still chowned for the container: revert them (vol-mgr). */
  revertPrep: boolean;
  /** The container's place in a netns group of the earlier boot: leave it (0: none). */
  untrackNetns: number;
}

export type BootDecision =
  | { kind: 'this-boot' }
  /** Written before records were stamped: taken for this boot, stamped with it. */
  | { kind: 'stamp'; record: ContainerRecord }
  | { kind: 'earlier-boot'; plan: RebootPlan };

export function bootDecision(rec: ContainerRecord, bootId: string): BootDecision {
  const of = bootOf(rec.boot, bootId);
  if (of === 'this-boot') return { kind: 'this-boot' };
  if (of === 'unstamped') return { kind: 'stamp', record: { ...rec, boot: bootId } };
  // A stopped container was unregistered already; one that ran when the host went down was not.
  const ran = rec.state !== 'stopped';
  const revertUpper = ran && rec.rootfsOvfsUpperChowned && !rec.autoRemove;
  const revertPrep = ran && rec.mountsPrepped;
  const record: ContainerRecord = {
    ...rec,
    boot: bootId,
    state: 'stopped',
    rootfsCloned: false,
    rmWatchPath: rec.rootfsCloned ? posix.dirname(rec.rmWatchPath) : rec.rmWatchPath,
    requested: { clone: rec.requested.clone || rec.rootfsCloned, shiftfs: [] },
    shiftfsMarks: [],
    rootfsOvfsUpperChowned: revertUpper ? false : rec.rootfsOvfsUpperChowned,
    mountsPrepped: revertPrep ? false : rec.mountsPrepped,
    userns: '',
    netns: '',
    netnsInode: 0,
    uidMappings: rec.subidAllocated ? rec.uidMappings : [],
    gidMappings: rec.subidAllocated ? rec.gidMappings : [],
  };
  return {
    kind: 'earlier-boot',
    plan: { record, revertUpper, revertPrep, untrackNetns: ran ? rec.netnsInode : 0 },
  };
}
