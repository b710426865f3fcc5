/**
 * One container as the gateway remembers it, durably (JetStream KV): what upstream's mgr.go kept
 * in its in-memory containerInfo, plus what a restarted gateway needs to resume the removal watch.
 */
import { posix } from 'node:path';
import { z } from 'zod';
import {
  ContainerId,
  HostPath,
  IdMapping,
  OciMount,
  ShiftfsMount,
  SysboxError,
  VolumeKindSchema,
  type SubidRange,
} from '@sysbox-mgr-ts/contracts';

/** sysbox-libs idShiftUtils.IDShiftType, as sysbox-runc sends it. */
export const ShiftType = {
  NoShift: 0,
  Shiftfs: 1,
  IDMappedMount: 2,
  IDMappedMountOrShiftfs: 3,
  Chown: 4,
} as const;

export const ContainerState = z.enum(['started', 'stopped', 'restarted']);
export type ContainerState = z.infer<typeof ContainerState>;

export const ContainerRecord = z.object({
  id: ContainerId,
  state: ContainerState,
  /** The rootfs sysbox-runc registered, or the clone's merged dir once cloned. */
  rootfs: HostPath,
  rootfsOnOvfs: z.boolean(),
  /** What the removal watch looks at once the container is stopped. */
  rmWatchPath: HostPath,
  userns: z.string(),
  netns: z.string(),
  /** 0 when the container has no netns of its own on record. */
  netnsInode: z.number().int().min(0),
  uidMappings: z.array(IdMapping),
  gidMappings: z.array(IdMapping),
  subidAllocated: z.boolean(),
  rootfsCloned: z.boolean(),
  /**
   * Asked of a service, reply not yet recorded: written before the request, so a gateway killed
   * before the reply still releases what the service may have made (release of what was never
   * made answers not-found, which counts as done). Records of older gateways have none.
   */
  requested: z
    .object({
      // No subid: a container's range is keyed by its id, and removal frees it by id whatever the
      // record says (the intent was one KV write on every SubidAlloc).
      clone: z.boolean().default(false),
      /** The marks asked for: unmark takes the mounts. */
      shiftfs: z.array(ShiftfsMount).default([]),
    })
    .default({ clone: false, shiftfs: [] }),
  rootfsUidShiftType: z.number().int().min(0),
  rootfsOvfsUpper: z.string(),
  rootfsOvfsUpperChowned: z.boolean(),
  /** vol-mgr holds prep records for this container: revert-prep on stop. */
  mountsPrepped: z.boolean(),
  /** Volume kinds vol-mgr created for this container, in request order. */
  volumeKinds: z.array(VolumeKindSchema),
  /** What ReqMounts answered; a restarted container gets exactly these back. */
  containerMounts: z.array(OciMount),
  shiftfsMarks: z.array(ShiftfsMount),
  autoRemove: z.boolean(),
  /**
   * The kernel boot id of the boot this record describes (kv-state readBootId). A record of an
   * earlier boot describes a container that no longer runs, whose mounts are gone (boot.ts).
   * Records of older gateways have none: taken for this boot and stamped at start.
   */
  boot: z.string().optional(),
  registeredAt: z.string(),
  updatedAt: z.string(),
});
export type ContainerRecord = z.infer<typeof ContainerRecord>;

/** The host ids container root maps to (the first uid and gid mapping); `failed-precondition` without one. */
export function firstMapping(rec: ContainerRecord, what: string): { uid: number; gid: number } {
  const u = rec.uidMappings[0];
  const g = rec.gidMappings[0];
  if (!u || !g)
    throw new SysboxError('failed-precondition', `container ${rec.id} has no uid/gid mapping for ${what}`);
  return { uid: u.hostId, gid: g.hostId };
}

/**
 * The record with an allocated subid range appended to its mappings, as SubidAlloc answers it
 * (unchanged when it has one already: a container keeps its first range across restarts).
 */
export function withSubidRange(rec: ContainerRecord, range: SubidRange): ContainerRecord {
  if (rec.subidAllocated) return rec;
  return {
    ...rec,
    uidMappings: [...rec.uidMappings, { containerId: 0, hostId: range.uid, size: range.size }],
    gidMappings: [...rec.gidMappings, { containerId: 0, hostId: range.gid, size: range.size }],
    subidAllocated: true,
  };
}

/** The shiftfs marks to undo: those confirmed and those asked for without an answer. */
export function marksToRelease(rec: ContainerRecord): ContainerRecord['shiftfsMarks'] {
  return [...rec.shiftfsMarks, ...rec.requested.shiftfs];
}

/** A record for a container seen for the first time. */
export function newRecord(
  id: string,
  rootfs: string,
  rootfsOnOvfs: boolean,
  rmWatchPath: string,
  now: string,
): ContainerRecord {
  return {
    id,
    state: 'started',
    rootfs,
    rootfsOnOvfs,
    rmWatchPath,
    userns: '',
    netns: '',
    netnsInode: 0,
    uidMappings: [],
    gidMappings: [],
    subidAllocated: false,
    rootfsCloned: false,
    requested: { clone: false, shiftfs: [] },
    rootfsUidShiftType: 0,
    rootfsOvfsUpper: '',
    rootfsOvfsUpperChowned: false,
    mountsPrepped: false,
    volumeKinds: [],
    containerMounts: [],
    shiftfsMarks: [],
    autoRemove: false,
    registeredAt: now,
    updatedAt: now,
  };
}

/**
 * Docker re-creates `<overlay2>/<id>/merged` on every start, so a stopped Docker container is
 * watched at `<overlay2>/<id>` (upstream sanitizeRootfs).
 */
export function removalWatchPath(rootfs: string): string {
  return rootfs.includes('/overlay2/') && posix.basename(rootfs) === 'merged'
    ? posix.dirname(rootfs)
    : rootfs;
}

/** The removal watch's paths among `records`: every stopped container's. */
export function watchedPathsOf(records: ContainerRecord[]): { id: string; path: string }[] {
  return records.filter((r) => r.state === 'stopped').map((r) => ({ id: r.id, path: r.rmWatchPath }));
}

/** Running containers with the path whose disappearance means the runtime removed them (the orphan collector's repair). */
export function runningPathsOf(records: ContainerRecord[]): { id: string; path: string }[] {
  return records.filter((r) => r.state !== 'stopped').map((r) => ({ id: r.id, path: r.rmWatchPath }));
}
