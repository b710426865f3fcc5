/**
 * Register and Update as decisions: the record sysbox-runc's request makes of what the table
 * holds. Pure; manager.ts runs them (the host checks before, the netns join and the write after).
 */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { ShiftType, firstMapping, newRecord, removalWatchPath, type ContainerRecord } from '../record.js';
import { planCall, type PlanCall } from '../executor.js';
import { rootfsShiftUpper } from '@sysbox-mgr-ts/contracts';
import type { RegisterInput, UpdateInput } from '../wire.js';

/** What a Register finds: a stored record, or none (then what a new one needs from the host). */
export type RegisterOver =
  { existing: ContainerRecord } | { fresh: { rootfsOnOvfs: boolean; now: string; bootId: string } };

/**
 * A new container's record, or a stopped one's restarted: the runtime's rootfs (unless a clone
 * stands in its place: a clone of an earlier boot is gone, and the restart's ReqCloneRootfs makes
 * a new one over this rootfs), the request's namespaces, and its id maps unless a subid range is
 * kept. A container that is not stopped is a redundant registration.
 */
export function registerPlan(
  req: RegisterInput,
  over: RegisterOver,
): { record: ContainerRecord; restart: boolean } {
  const { id, rootfs } = req;
  let rec: ContainerRecord;
  if ('fresh' in over) {
    const { rootfsOnOvfs, now, bootId } = over.fresh;
    rec = { ...newRecord(id, rootfs, rootfsOnOvfs, removalWatchPath(rootfs), now), boot: bootId };
  } else {
    if (over.existing.state !== 'stopped')
      throw new SysboxError('failed-precondition', `redundant container registration for container ${id}`);
    rec = { ...over.existing, state: 'restarted' };
    if (!rec.rootfsCloned) {
      rec.rootfs = rootfs;
      rec.rmWatchPath = removalWatchPath(rootfs);
    }
  }
  rec.netns = req.netns;
  rec.userns = req.userns;
  if (!rec.subidAllocated) {
    rec.uidMappings = req.uidMappings;
    rec.gidMappings = req.gidMappings;
  }
  return { record: rec, restart: 'existing' in over };
}

/**
 * Update: fills what Register left empty and records the rootfs's ID-shift type. An ID-mapped
 * rootfs on overlayfs keeps its upper dir chowned while it runs (overlayfs cannot ID-map it);
 * sysbox-runc chowned it already, so `chownedUpper` is true when rootfs-cloner must record that
 * (so stop and pause can give it back its at-rest owner) and the upper dir must be looked up.
 */
export function updatePlan(
  rec: ContainerRecord,
  req: UpdateInput,
): { record: ContainerRecord; chownedUpper: boolean } {
  const next = { ...rec };
  if (next.userns === '' && req.userns !== '') next.userns = req.userns;
  if (next.uidMappings.length === 0 && req.uidMappings.length > 0) next.uidMappings = req.uidMappings;
  if (next.gidMappings.length === 0 && req.gidMappings.length > 0) next.gidMappings = req.gidMappings;
  next.rootfsUidShiftType = req.rootfsUidShiftType;
  const chownedUpper =
    next.rootfsOnOvfs && req.rootfsUidShiftType === ShiftType.IDMappedMount && !next.rootfsOvfsUpperChowned;
  return { record: next, chownedUpper };
}

/** rootfs-cloner's record of an upper dir sysbox-runc chowned already (already-exists: recorded). */
export function recordUpperChown(rec: ContainerRecord, upperDir: string): PlanCall {
  const { uid, gid } = firstMapping(rec, 'the upper-dir chown');
  return planCall(
    'record of the rootfs upper-dir chown',
    rootfsShiftUpper,
    { id: rec.id, upperDir, uidOffset: uid, gidOffset: gid, alreadyShifted: true },
    {
      bound: true,
      onError: 'exists-ok',
      apply: (r) => ({ ...r, rootfsOvfsUpper: upperDir, rootfsOvfsUpperChowned: true }),
    },
  );
}
