/**
 * Unregister, Pause and Resume as decisions: which service calls a stop, a pause or a resume
 * needs, and what each reply makes of the record. Pure; manager.ts runs them (executor.ts).
 */
import {
  SysboxError,
  rootfsChownClone,
  rootfsContainerStopped,
  rootfsRevertChown,
  rootfsRevertUpper,
  rootfsShiftUpper,
  shiftfsUnmark,
  volRevertPrep,
} from '@sysbox-mgr-ts/contracts';
import { planCall, type PlanCall } from '../executor.js';
import { ShiftType, firstMapping, marksToRelease, type ContainerRecord } from '../record.js';

export interface UnregisterPlan {
  /**
   * Before the record is written stopped, in order: shiftfs unmark and revert of the mount
   * preparation may fail (kept on the record: the removal retries them); the revert of the
   * upper-dir chown may not. `lookupClone` comes second.
   */
  unmark?: PlanCall;
  /** The clone was asked for and its reply lost: if it exists, its stack is what the removal must watch. */
  lookupClone: boolean;
  undo: PlanCall[];
  /** The netns group to leave (0: none). */
  untrackNetns: number;
}

export function unregisterPlan(rec: ContainerRecord): UnregisterPlan {
  const { id } = rec;
  if (rec.state === 'stopped')
    throw new SysboxError('failed-precondition', `redundant container unregistration for container ${id}`);
  const marks = marksToRelease(rec);
  const undo: PlanCall[] = [];
  if (rec.rootfsOvfsUpperChowned && !rec.autoRemove)
    undo.push(
      planCall(
        'revert of the rootfs upper-dir chown',
        rootfsRevertUpper,
        { id },
        {
          bound: 'Unregister',
          apply: (r) => ({ ...r, rootfsOvfsUpperChowned: false }),
        },
      ),
    );
  if (rec.mountsPrepped)
    undo.push(
      planCall(
        'revert of mount preparation',
        volRevertPrep,
        { id },
        {
          bound: 'Unregister',
          onError: 'warn',
          warning: 'failed to revert mount preparation',
          apply: (r) => ({ ...r, mountsPrepped: false }),
        },
      ),
    );
  return {
    ...(marks.length > 0 && {
      unmark: planCall(
        'shiftfs unmark',
        shiftfsUnmark,
        { id, mounts: marks },
        {
          onError: 'warn',
          warning: 'failed to remove shiftfs marks',
          apply: (r) => ({ ...r, shiftfsMarks: [], requested: { ...r.requested, shiftfs: [] } }),
        },
      ),
    }),
    lookupClone: rec.requested.clone && !rec.rootfsCloned,
    undo,
    untrackNetns: rec.netnsInode,
  };
}

/** The record Unregister writes: stopped, out of its namespaces, its id maps kept only with a subid range. */
export function stoppedRecord(rec: ContainerRecord): ContainerRecord {
  return {
    ...rec,
    state: 'stopped',
    userns: '',
    netns: '',
    netnsInode: 0,
    uidMappings: rec.subidAllocated ? rec.uidMappings : [],
    gidMappings: rec.subidAllocated ? rec.gidMappings : [],
  };
}

/**
 * After the stopped record is written: the volumes are synced out unless the runtime removes the
 * container (docker --rm); rootfs-cloner is told a cloned rootfs stopped.
 */
export function afterStop(rec: ContainerRecord): { syncOut: boolean; notice?: PlanCall } {
  return {
    syncOut: !rec.autoRemove,
    ...(rec.rootfsCloned && {
      notice: planCall('container-stopped notice', rootfsContainerStopped, { id: rec.id }),
    }),
  };
}

/** Pause: the rootfs gets its at-rest owner back (upper dir, or the chowned clone); then the volumes sync out. */
export function pauseCalls(rec: ContainerRecord): PlanCall[] {
  const { id } = rec;
  if (rec.rootfsOvfsUpperChowned)
    return [
      planCall(
        'revert of the rootfs upper-dir chown',
        rootfsRevertUpper,
        { id },
        {
          bound: 'Pause',
          apply: (r) => ({ ...r, rootfsOvfsUpperChowned: false }),
        },
      ),
    ];
  if (rec.rootfsCloned && rec.rootfsUidShiftType === ShiftType.Chown)
    return [planCall('revert of the clone chown', rootfsRevertChown, { id }, { bound: 'Pause' })];
  return [];
}

/** Resume: what Pause gave back is shifted again. */
export function resumeCalls(rec: ContainerRecord): PlanCall[] {
  const { id } = rec;
  if (rec.rootfsUidShiftType === ShiftType.IDMappedMount && rec.rootfsOnOvfs && rec.rootfsOvfsUpper !== '') {
    const { uid, gid } = firstMapping(rec, 'resume');
    return [
      planCall(
        'shift of the rootfs upper dir',
        rootfsShiftUpper,
        { id, upperDir: rec.rootfsOvfsUpper, uidOffset: uid, gidOffset: gid },
        { bound: true, apply: (r) => ({ ...r, rootfsOvfsUpperChowned: true }) },
      ),
    ];
  }
  if (rec.rootfsCloned && rec.rootfsUidShiftType === ShiftType.Chown) {
    const { uid, gid } = firstMapping(rec, 'resume');
    return [
      planCall('clone chown', rootfsChownClone, { id, uidOffset: uid, gidOffset: gid }, { bound: 'Resume' }),
    ];
  }
  return [];
}
