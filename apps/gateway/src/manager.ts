/**
 * The lifecycle rules of upstream's mgr.go, call by call: each RPC method composes the container
 * table (table.ts), netns sharing (netns.ts), the volume policy (volumes.ts), reply checks
 * (reply-checks.ts) and removal (removal.ts), with every filesystem action delegated to the four
 * services over NATS. Input arrives parsed and typed from the gRPC edge (wire.ts).
 */
import { posix } from 'node:path';
import {
  SysboxError,
  isSysboxError,
  rootfsChownClone,
  rootfsContainerStopped,
  rootfsCreateClone,
  rootfsList,
  rootfsRevertChown,
  rootfsRevertUpper,
  rootfsShiftUpper,
  shiftfsMark,
  shiftfsUnmark,
  subidAlloc,
  volPrep,
  volRevertPrep,
  type OciMount,
  type ShiftfsMount,
} from '@sysbox-mgr-ts/contracts';
import { readBootId, type KvStateStore, type StateStore } from '@sysbox-mgr-ts/kv-state';
import { allPages, type Logger, type ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { bootDecision } from './boot.js';
import { createNetnsSharing, type NetnsMembers } from './netns.js';
import { linuxHeaderPath, type HostChecks, type HostFacts, type RetrySchedule } from './probes.js';
import {
  ShiftType,
  firstMapping,
  marksToRelease,
  newRecord,
  withSubidRange,
  type ContainerRecord,
} from './record.js';
import { createRemoval } from './removal.js';
import { createReplyChecks, type ReplyCheckOptions } from './reply-checks.js';
import { serviceCaller, type ServiceCall } from './service-call.js';
import { startReconcile, type StartReconcile } from './start-reconcile.js';
import { startSubidReconcile, type SubidReconcile } from './subid-reconcile.js';
import { createContainerTable } from './table.js';
import { createVolumePolicy } from './volumes.js';
import {
  parseContainerId,
  type ChownClonedRootfsInput,
  type ContainerConfig,
  type IdInput,
  type PrepMountsInput,
  type RegisterInput,
  type ReqFsStateInput,
  type ReqMountsInput,
  type ReqShiftfsMarkInput,
  type SubidAllocInput,
  type UpdateInput,
} from './wire.js';

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

/** runc configs.FsEntry: kind 2 = dir, 3 = softlink. */
export interface FsEntry {
  kind: number;
  path: string;
  mode: number;
  dst: string;
}

const FS_DIR = 2;
const FS_SOFTLINK = 3;

export interface ManagerDeps {
  services: ServiceClient;
  containers: KvStateStore<ContainerRecord>;
  netns: StateStore<NetnsMembers>;
  host: HostChecks;
  facts: HostFacts;
  config: MgrConfig;
  timeouts: { opMs: number; longOpMs: number };
  clock: () => Date;
  log: Logger;
  /**
   * What service replies are checked against before sysbox-runc sees them: volume mounts must be
   * vol-mgr's dirs under the data root, subid ranges must be delegated in the subid files.
   */
  replyChecks: ReplyCheckOptions;
  /** Told when a container's removal watch starts (a path) or ends (undefined). */
  onWatch?: (id: string, path: string | undefined) => void;
  /** Whether the container runtime removes the container when it stops (Docker's `--rm`). */
  autoRemove?: (id: string) => Promise<boolean>;
  /** The kernel's boot id, stamped on records (boot.ts); read from /proc when left out. */
  bootId?: string;
}

export interface Manager {
  register(req: RegisterInput): Promise<ContainerConfig>;
  update(req: UpdateInput): Promise<void>;
  unregister(req: IdInput): Promise<void>;
  subidAlloc(req: SubidAllocInput): Promise<{ uid: number; gid: number }>;
  prepMounts(req: PrepMountsInput): Promise<void>;
  reqMounts(req: ReqMountsInput): Promise<OciMount[]>;
  reqShiftfsMark(req: ReqShiftfsMarkInput): Promise<ShiftfsMount[]>;
  reqFsState(req: ReqFsStateInput): Promise<FsEntry[]>;
  pause(req: IdInput): Promise<void>;
  resume(req: IdInput): Promise<void>;
  cloneRootfs(req: IdInput): Promise<string>;
  chownClonedRootfs(req: ChownClonedRootfsInput): Promise<void>;
  revertClonedRootfsChown(req: IdInput): Promise<void>;
  /** The removal watch fired: release everything of a stopped container and forget it. */
  removeContainer(id: string): Promise<boolean>;
  /** Every stopped container's watch path, from the table. */
  watchedPaths(): Promise<{ id: string; path: string }[]>;
  /** Every record of the table, read from KV. */
  list(): Promise<ContainerRecord[]>;
  /** Running containers and the path whose disappearance means the runtime removed them. */
  runningPaths(): Promise<{ id: string; path: string }[]>;
  /** The record of any id (unchecked ids from service lists included); `invalid-request` for a hostile one. */
  get(id: string): Promise<ContainerRecord | undefined>;
  /** Starts adopting the subid ranges a lost gateway held unwritten, `records` being the table just read (subid-reconcile.ts). */
  reconcileSubids(records: ContainerRecord[], retry: RetrySchedule): SubidReconcile;
  /**
   * Starts turning the records of an earlier boot among `records` (the table just read) into
   * stopped containers of this boot, and stamping unstamped ones (boot.ts); each is queued on
   * its container's lock at once, so call it before the socket opens.
   */
  reconcileBoot(records: ContainerRecord[], retry: RetrySchedule): StartReconcile;
}

const BINFMT_MISC_MOUNT: OciMount = {
  destination: '/proc/sys/fs/binfmt_misc',
  source: 'binfmt_misc',
  type: 'binfmt_misc',
  options: ['noexec', 'nosuid', 'nodev'],
};

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

/** rootfs-cloner's record of this container's clone, as create-clone would have answered it. */
async function existingClone(
  call: ServiceCall,
  id: string,
): Promise<{ rootfs: string; origWorkDir: string } | undefined> {
  const pages = await allPages((cursor) => call(id, 'clone lookup', rootfsList, { cursor }));
  const c = pages.flatMap((p) => p.clones).find((x) => x.id === id);
  return c && { rootfs: c.cloneRootfs, origWorkDir: c.origWorkDir };
}

function adoptClone(rec: ContainerRecord, clone: { rootfs: string; origWorkDir: string }): void {
  rec.rootfs = clone.rootfs;
  rec.rootfsCloned = true;
  rec.requested.clone = false;
  // The runtime cannot remove a rootfs the clone is stacked on; the original overlay's
  // workdir is what disappears when the container is removed.
  rec.rmWatchPath = posix.join(clone.origWorkDir, 'work');
}

export function createManager(deps: ManagerDeps): Manager {
  const { host, facts, config, log } = deps;
  const table = createContainerTable(deps.containers, deps.clock);
  const call = serviceCaller(deps.services, deps.timeouts);

  /**
   * Asks, in the background as upstream does, whether the runtime will remove the container when
   * it stops; the answer goes on the record, where Unregister reads it.
   */
  const noteAutoRemove = (id: string): void => {
    if (!deps.autoRemove) return;
    void deps
      .autoRemove(id)
      .then((autoRemove) => {
        if (!autoRemove) return;
        return table.serialized(id, async () => {
          const rec = await table.get(id);
          if (!rec || rec.autoRemove) return;
          rec.autoRemove = true;
          await table.save(rec);
          log.info(
            { id },
            'the runtime removes this container when it stops (docker --rm): no sync-out or upper-dir revert then',
          );
        });
      })
      .catch((err: unknown) => log.warn({ id, err }, 'auto-remove check failed'));
  };
  const checks = createReplyChecks(deps.replyChecks, log);
  const netns = createNetnsSharing({ store: deps.netns, table, host });
  const volumes = createVolumePolicy({
    call,
    table,
    checks,
    facts,
    noInnerImgPreload: config.noInnerImgPreload,
    log,
  });
  const removeContainer = createRemoval({ table, call, netns, log, onWatch: deps.onWatch });
  const notRegistered = (id: string): string => `container ${id} is not registered`;
  const bootId = deps.bootId ?? readBootId();

  /**
   * The record as this boot sees it (boot.ts): unchanged when it is of this boot; stamped when it
   * predates stamps; of an earlier boot, stopped as the reboot left it, after what Unregister
   * would have undone on disk. Runs under the container's lock. A failed revert of the upper dir
   * throws (the record stays of the earlier boot and is tried again); a failed revert of the mount
   * preparation is left on the record, where the removal retries it, as Unregister does.
   */
  const settleBoot = async (rec: ContainerRecord): Promise<ContainerRecord> => {
    const decision = bootDecision(rec, bootId);
    if (decision.kind === 'this-boot') return rec;
    if (decision.kind === 'stamp') {
      await table.save(decision.record);
      return decision.record;
    }
    const { plan } = decision;
    const { id } = rec;
    const next = { ...plan.record, requested: { ...plan.record.requested } };
    if (plan.revertUpper)
      await call(id, 'revert of the rootfs upper-dir chown after a reboot', rootfsRevertUpper, { id }, true);
    if (plan.revertPrep) {
      try {
        await call(id, 'revert of mount preparation after a reboot', volRevertPrep, { id }, true);
      } catch (err) {
        log.warn({ id, err }, 'failed to revert mount preparation after a reboot; the removal retries it');
        next.mountsPrepped = true;
      }
    }
    if (plan.untrackNetns !== 0)
      await netns
        .untrack(id, plan.untrackNetns)
        .catch((err: unknown) => log.warn({ id, err }, 'netns untrack failed'));
    await table.save(next, rec.state);
    deps.onWatch?.(id, next.rmWatchPath);
    log.info(
      { id, was: rec.state, boot: rec.boot, watch: next.rmWatchPath },
      'container of an earlier boot: stopped, its mounts forgotten, its volumes and subid range kept',
    );
    return next;
  };
  const thisBoot = async (rec: ContainerRecord | undefined): Promise<ContainerRecord | undefined> =>
    rec && settleBoot(rec);

  return {
    get: async (id) => table.get(parseContainerId(id)),
    removeContainer,
    list: () => table.list(),
    reconcileSubids: (records, retry) =>
      startSubidReconcile({ records, table, services: deps.services, checks, retry, log }),
    reconcileBoot: (records, retry) =>
      startReconcile({
        ids: records.filter((r) => bootDecision(r, bootId).kind !== 'this-boot').map((r) => r.id),
        pass: (ids) =>
          ids.map((id) =>
            table.serialized(id, async () => {
              await thisBoot(await table.get(id));
            }),
          ),
        retry,
        log,
        what: 'could not settle a container of an earlier boot yet',
      }),

    register({ id, rootfs, userns, netns: netnsPath, uidMappings, gidMappings }) {
      const registerOver = async (existing: ContainerRecord | undefined): Promise<ContainerConfig> => {
        let rec: ContainerRecord;
        if (!existing) {
          let rootfsOnOvfs: boolean;
          try {
            rootfsOnOvfs = await host.isOnOverlay(rootfs);
          } catch (err) {
            throw new SysboxError(
              'invalid-request',
              `container ${id}: rootfs ${rootfs}: ${(err as Error).message}`,
            );
          }
          rec = {
            ...newRecord(id, rootfs, rootfsOnOvfs, removalWatchPath(rootfs), table.now()),
            boot: bootId,
          };
        } else {
          if (existing.state !== 'stopped') {
            throw new SysboxError(
              'failed-precondition',
              `redundant container registration for container ${id}`,
            );
          }
          rec = { ...existing, state: 'restarted' };
          // The runtime's rootfs, unless a clone stands in its place (a clone of an earlier boot
          // is gone, and the restart's ReqCloneRootfs makes a new one over this rootfs).
          if (!existing.rootfsCloned) {
            rec.rootfs = rootfs;
            rec.rmWatchPath = removalWatchPath(rootfs);
          }
        }
        rec.netns = netnsPath;
        rec.userns = userns;
        if (!rec.subidAllocated) {
          rec.uidMappings = uidMappings;
          rec.gidMappings = gidMappings;
        }
        await netns.onRegister(rec);
        if (!existing) {
          await table.create(rec);
          log.info({ id }, 'registered new container');
        } else {
          await table.save(rec, 'stopped');
          deps.onWatch?.(id, undefined);
          log.info({ id }, 'registered container');
        }
        return containerConfig(config, rec);
      };
      return table.serialized(id, async () => {
        // A new container is the common case: an id this gateway does not remember goes straight
        // to a create, which KV refuses when a record exists; only then is the record read (the
        // stopped record of a restart, or a redundant registration).
        // A record of an earlier boot is a stopped container by now (settleBoot).
        const remembered = table.remembered(id);
        if (remembered) return registerOver(await thisBoot(remembered));
        try {
          return await registerOver(undefined);
        } catch (err) {
          if (!isSysboxError(err, 'already-exists')) throw err;
          // Removed between the create and this read: a new container after all.
          const stored = await table.get(id);
          return registerOver(await thisBoot(stored));
        }
      });
    },

    update({ id, userns, netns: netnsPath, uidMappings, gidMappings, rootfsUidShiftType }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, `can't update container ${id}; not found in container table`);
        await netns.onUpdate(rec, netnsPath);
        if (rec.userns === '' && userns !== '') rec.userns = userns;
        if (rec.uidMappings.length === 0 && uidMappings.length > 0) rec.uidMappings = uidMappings;
        if (rec.gidMappings.length === 0 && gidMappings.length > 0) rec.gidMappings = gidMappings;
        rec.rootfsUidShiftType = rootfsUidShiftType;

        // An ID-mapped rootfs on overlayfs keeps its upper dir chowned while it runs (overlayfs
        // cannot ID-map it). sysbox-runc has chowned it already, as with upstream's manager:
        // rootfs-cloner only records it, so stop and pause can give it back its at-rest owner.
        if (
          rec.rootfsOnOvfs &&
          rootfsUidShiftType === ShiftType.IDMappedMount &&
          !rec.rootfsOvfsUpperChowned
        ) {
          const upperDir = await host.overlayUpperDir(rec.rootfs).catch(() => undefined);
          if (upperDir) {
            const { uid, gid } = firstMapping(rec, 'the upper-dir chown');
            try {
              await call(
                id,
                'record of the rootfs upper-dir chown',
                rootfsShiftUpper,
                { id, upperDir, uidOffset: uid, gidOffset: gid, alreadyShifted: true },
                true,
              );
            } catch (err) {
              if (!isSysboxError(err, 'already-exists')) throw err;
            }
            rec.rootfsOvfsUpper = upperDir;
            rec.rootfsOvfsUpperChowned = true;
          } else {
            log.warn({ id, rootfs: rec.rootfs }, 'rootfs is on overlayfs but its upper dir was not found');
          }
        }
        await table.save(rec);
      });
    },

    unregister({ id }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, `can't unregister container ${id}; not found in container table`);
        if (rec.state === 'stopped') {
          throw new SysboxError(
            'failed-precondition',
            `redundant container unregistration for container ${id}`,
          );
        }
        const before = rec.state;
        const marks = marksToRelease(rec);
        if (marks.length > 0) {
          try {
            await call(id, 'shiftfs unmark', shiftfsUnmark, { id, mounts: marks });
            rec.shiftfsMarks = [];
            rec.requested.shiftfs = [];
          } catch (err) {
            // Kept on the record: the removal retries it.
            log.warn({ id, err }, 'failed to remove shiftfs marks');
          }
        }
        if (rec.requested.clone && !rec.rootfsCloned) {
          // The clone's reply was lost: if it exists, its stack is what the removal must watch.
          const clone = await existingClone(call, id).catch(() => undefined);
          if (clone) adoptClone(rec, clone);
        }
        if (rec.rootfsOvfsUpperChowned && !rec.autoRemove) {
          await call(id, 'revert of the rootfs upper-dir chown', rootfsRevertUpper, { id }, 'Unregister');
          rec.rootfsOvfsUpperChowned = false;
        }
        if (rec.mountsPrepped) {
          try {
            await call(id, 'revert of mount preparation', volRevertPrep, { id }, 'Unregister');
            rec.mountsPrepped = false;
          } catch (err) {
            // Kept on the record: the removal retries it.
            log.warn({ id, err }, 'failed to revert mount preparation');
          }
        }
        await netns
          .untrack(id, rec.netnsInode)
          .catch((err: unknown) => log.warn({ id, err }, 'netns untrack failed'));
        rec.userns = '';
        rec.netns = '';
        rec.netnsInode = 0;
        if (!rec.subidAllocated) {
          rec.uidMappings = [];
          rec.gidMappings = [];
        }
        rec.state = 'stopped';
        await table.save(rec, before);
        try {
          if (!rec.autoRemove) {
            const failed = await volumes.syncOut(rec, 'Unregister');
            if (failed.length > 0) log.warn({ id, failed }, 'sync-out failed for some volumes');
          }
          if (rec.rootfsCloned) await call(id, 'container-stopped notice', rootfsContainerStopped, { id });
        } finally {
          deps.onWatch?.(id, rec.rmWatchPath);
          log.info({ id, watch: rec.rmWatchPath }, 'unregistered container');
        }
      });
    },

    subidAlloc({ id, size }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, notRegistered(id));
        // Kept across restarts: a restarted container gets its earlier range back.
        if (rec.subidAllocated) return firstMapping(rec, 'subid allocation');
        // No intent record and no write: the allocator keeps the range under the container's id
        // before it answers and answers the same range for the same id, so removal frees it by id
        // whatever the record says, a retry after a lost reply is safe, and the table holds it
        // for the record's next write (table.ts).
        const range = await call(id, 'subid allocation', subidAlloc, { id, size });
        await checks.subids(id, range);
        table.holdSubidRange(id, range);
        return firstMapping(withSubidRange(rec, range), 'subid allocation');
      });
    },

    prepMounts({ id, uid, gid, prepList }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, notRegistered(id));
        const needPrep = [];
        for (const s of prepList) {
          // A source that can be ID-mapped needs no chown.
          if (
            config.overlayfsOnIDMapMountOk &&
            (await host.idMapMountSupportedOnPath(s.source).catch(() => false))
          )
            continue;
          needPrep.push(s);
        }
        if (needPrep.length === 0) return;
        // Recorded before asking: revert-prep of a container vol-mgr holds nothing for reverts nothing.
        if (!rec.mountsPrepped) {
          rec.mountsPrepped = true;
          await table.save(rec);
        }
        await call(
          id,
          'mount source preparation',
          volPrep,
          { id, uid, gid, sources: needPrep },
          'PrepMounts',
        );
      });
    },

    reqMounts({ id, rootfsUidShiftType, reqList }) {
      const extra = config.mountBinfmtMisc ? [BINFMT_MISC_MOUNT] : [];
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, notRegistered(id));
        // A restarted container gets the mounts it had (its volumes kept their contents).
        if (rec.state !== 'restarted') {
          await volumes.create(rec, rootfsUidShiftType, reqList);
          noteAutoRemove(id);
        }
        return [...rec.containerMounts, ...extra];
      });
    },

    reqShiftfsMark({ id, shiftfsMarks }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, notRegistered(id));
        if (rec.shiftfsMarks.length === 0) {
          await table.recordIntent(rec, (r) => (r.shiftfs = shiftfsMarks));
          const r = await call(id, 'shiftfs mark', shiftfsMark, {
            id,
            mounts: shiftfsMarks,
            createMarkpoint: true,
          });
          rec.shiftfsMarks = r.mounts;
          rec.requested.shiftfs = [];
          await table.save(rec);
        }
        return rec.shiftfsMarks;
      });
    },

    async reqFsState({ id, rootfs }) {
      await table.mustGet(id, notRegistered(id));
      if (facts.linuxHeaderMounts.length === 0) return [];
      const distro = await host.distroOf(rootfs);
      if (distro === undefined || distro === facts.hostDistro) return [];
      const cntrPath = linuxHeaderPath(distro, facts.kernelRelease);
      if (cntrPath === facts.hostKernelHdrPath) return [];
      return [
        { kind: FS_DIR, path: posix.dirname(cntrPath), mode: 0o755, dst: '' },
        { kind: FS_SOFTLINK, path: cntrPath, mode: 0o644, dst: facts.hostKernelHdrPath },
      ];
    },

    pause({ id }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, `can't pause container ${id}; not found in container table`);
        if (rec.rootfsOvfsUpperChowned) {
          await call(id, 'revert of the rootfs upper-dir chown', rootfsRevertUpper, { id }, 'Pause');
          rec.rootfsOvfsUpperChowned = false;
          await table.save(rec);
        } else if (rec.rootfsCloned && rec.rootfsUidShiftType === ShiftType.Chown) {
          await call(id, 'revert of the clone chown', rootfsRevertChown, { id }, 'Pause');
        }
        const failed = await volumes.syncOut(rec, 'Pause');
        if (failed.length > 0) {
          throw new SysboxError(
            'internal',
            `container ${id}: sync-out for volume backing ${failed.join(', ')} failed`,
          );
        }
      });
    },

    resume({ id }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, `can't resume container ${id}; not found in container table`);
        if (
          rec.rootfsUidShiftType === ShiftType.IDMappedMount &&
          rec.rootfsOnOvfs &&
          rec.rootfsOvfsUpper !== ''
        ) {
          const { uid, gid } = firstMapping(rec, 'resume');
          await call(
            id,
            'shift of the rootfs upper dir',
            rootfsShiftUpper,
            { id, upperDir: rec.rootfsOvfsUpper, uidOffset: uid, gidOffset: gid },
            true,
          );
          rec.rootfsOvfsUpperChowned = true;
          await table.save(rec);
        } else if (rec.rootfsCloned && rec.rootfsUidShiftType === ShiftType.Chown) {
          const { uid, gid } = firstMapping(rec, 'resume');
          await call(id, 'clone chown', rootfsChownClone, { id, uidOffset: uid, gidOffset: gid }, 'Resume');
        }
      });
    },

    cloneRootfs({ id }) {
      return table.serialized(id, async () => {
        const rec = await table.mustGet(id, notRegistered(id));
        if (!rec.rootfsCloned) {
          const adoptable = rec.requested.clone;
          await table.recordIntent(rec, (r) => (r.clone = true));
          let clone: { rootfs: string; origWorkDir: string } | undefined;
          try {
            clone = await call(
              id,
              'rootfs clone',
              rootfsCreateClone,
              { id, origRootfs: rec.rootfs },
              'ReqCloneRootfs',
            );
          } catch (err) {
            // An earlier ReqCloneRootfs whose reply was lost (this gateway died) made it already.
            clone =
              isSysboxError(err, 'already-exists') && adoptable ? await existingClone(call, id) : undefined;
            if (!clone) throw err;
            log.info(
              { id, rootfs: clone.rootfs },
              'adopted a clone made by an earlier, unanswered ReqCloneRootfs',
            );
          }
          adoptClone(rec, clone);
          await table.save(rec);
        }
        return rec.rootfs;
      });
    },

    chownClonedRootfs({ id, uidOffset, gidOffset }) {
      return table.serialized(id, async () => {
        await table.mustGet(id, notRegistered(id));
        await call(id, 'clone chown', rootfsChownClone, { id, uidOffset, gidOffset }, 'ChownClonedRootfs');
      });
    },

    revertClonedRootfsChown({ id }) {
      return table.serialized(id, async () => {
        await table.mustGet(id, notRegistered(id));
        await call(id, 'revert of the clone chown', rootfsRevertChown, { id }, 'RevertClonedRootfsChown');
      });
    },

    async runningPaths() {
      return (await table.list())
        .filter((r) => r.state !== 'stopped')
        .map((r) => ({ id: r.id, path: r.rmWatchPath }));
    },

    async watchedPaths() {
      return watchedPathsOf(await table.list());
    },
  };
}
