/**
 * The container table and lifecycle rules of upstream's mgr.go, call by call, with every
 * filesystem action delegated to the four services over NATS and every container kept in
 * JetStream KV, so a restarted gateway forgets nothing.
 *
 * Service calls never run inside a KV compare-and-set callback (a retried callback would repeat
 * them): each operation reads its record, calls the services, then writes the outcome.
 */
import { posix } from 'node:path';
import {
  ContainerId,
  ContainerPath,
  HostPath,
  IdMapping,
  SysboxError,
  VOLUME_KINDS,
  VOLUME_LAYOUT,
  isSysboxError,
  rootfsChownClone,
  rootfsContainerStopped,
  rootfsCreateClone,
  rootfsList,
  rootfsRemoveClone,
  rootfsRevertChown,
  rootfsRevertUpper,
  rootfsShiftUpper,
  shiftfsMark,
  shiftfsUnmark,
  subidAlloc,
  subidFree,
  volByKind,
  volList,
  volPrep,
  volRevertPrep,
  type Contract,
  type OciMount,
  type ReplyOf,
  type RequestInputOf,
  type ShiftfsMount,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import { assertIdsDelegated, readDelegatedRanges } from '@sysbox-mgr-ts/host-guard';
import type { StateStore } from '@sysbox-mgr-ts/kv-state';
import { REMOVE } from '@sysbox-mgr-ts/kv-state';
import type { Logger, ServiceClient } from '@sysbox-mgr-ts/service-kit';
import type { z } from 'zod';
import { linuxHeaderPath, type HostChecks, type HostFacts } from './probes.js';
import { ShiftType, type ContainerRecord } from './record.js';

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

/** The wire's ContainerConfig, field names as the .proto spells them. */
export interface ContainerConfig {
  aliasDns: boolean;
  ShiftfsOk: boolean;
  ShiftfsOnOverlayfsOk: boolean;
  IDMapMountOk: boolean;
  OverlayfsOnIDMapMountOk: boolean;
  noRootfsCloning: boolean;
  ignoreSysfsChown: boolean;
  allowTrustedXattr: boolean;
  honorCaps: boolean;
  syscontMode: boolean;
  userns: string;
  uidMappings: IdMapping[];
  gidMappings: IdMapping[];
  fsuidMapFailOnErr: boolean;
  rootfsUidShiftType: number;
  noShiftfsOnFuse: boolean;
  relaxedReadOnly: boolean;
}

export interface RegistrationInfo {
  id: string;
  rootfs: string;
  userns: string;
  netns: string;
  uidMappings: IdMapping[];
  gidMappings: IdMapping[];
}

export interface UpdateInfo {
  id: string;
  userns: string;
  netns: string;
  uidMappings: IdMapping[];
  gidMappings: IdMapping[];
  rootfsUidShiftType: number;
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

/** Who shares a network namespace, in the order they joined it (upstream netnsTable). */
export interface NetnsMembers {
  ids: string[];
}

export interface ManagerDeps {
  services: ServiceClient;
  containers: StateStore<ContainerRecord>;
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
  replyChecks: { dataRoot: string; subuidFile: string; subgidFile: string };
  /** Told when a container's removal watch starts (a path) or ends (undefined). */
  onWatch?: (id: string, path: string | undefined) => void;
}

export interface Manager {
  register(req: RegistrationInfo): Promise<ContainerConfig>;
  update(req: UpdateInfo): Promise<void>;
  unregister(id: string): Promise<void>;
  subidAlloc(id: string, size: number): Promise<{ uid: number; gid: number }>;
  prepMounts(id: string, uid: number, gid: number, prepList: { source: string; exclusive: boolean }[]): Promise<void>;
  reqMounts(id: string, rootfsUidShiftType: number, reqList: { kind: number; dest: string }[]): Promise<OciMount[]>;
  reqShiftfsMark(id: string, marks: ShiftfsMount[]): Promise<ShiftfsMount[]>;
  reqFsState(id: string, rootfs: string): Promise<FsEntry[]>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  cloneRootfs(id: string): Promise<string>;
  chownClonedRootfs(id: string, uidOffset: number, gidOffset: number): Promise<void>;
  revertClonedRootfsChown(id: string): Promise<void>;
  /** The removal watch fired: release everything of a stopped container and forget it. */
  removeContainer(id: string): Promise<boolean>;
  /** Every stopped container's watch path, from the table. */
  watchedPaths(): Promise<{ id: string; path: string }[]>;
  /** Running containers and the path whose disappearance means the runtime removed them. */
  runningPaths(): Promise<{ id: string; path: string }[]>;
  get(id: string): Promise<ContainerRecord | undefined>;
}

const BINFMT_MISC_MOUNT: OciMount = {
  destination: '/proc/sys/fs/binfmt_misc',
  source: 'binfmt_misc',
  type: 'binfmt_misc',
  options: ['noexec', 'nosuid', 'nodev'],
};

function check<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new SysboxError('invalid-request', `${what}: ${r.error.issues.map((i) => i.message).join('; ')}`);
  }
  return r.data;
}

function checkId(id: unknown): string {
  return check(ContainerId, id, `container id ${JSON.stringify(String(id).slice(0, 160))}`);
}

function checkNsPath(path: string, what: string): string {
  return path === '' ? '' : check(HostPath, path, what);
}

/**
 * Docker re-creates `<overlay2>/<id>/merged` on every start, so a stopped Docker container is
 * watched at `<overlay2>/<id>` (upstream sanitizeRootfs).
 */
export function removalWatchPath(rootfs: string): string {
  return rootfs.includes('/overlay2/') && posix.basename(rootfs) === 'merged' ? posix.dirname(rootfs) : rootfs;
}

export function createManager(deps: ManagerDeps): Manager {
  const { services, containers, host, facts, config, log } = deps;
  const locks = new Map<string, Promise<unknown>>();

  /** One operation at a time per container in this process; KV CAS covers other gateways. */
  function serialized<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    locks.set(id, tail);
    void tail.then(() => {
      if (locks.get(id) === tail) locks.delete(id);
    });
    return next;
  }

  const now = (): string => deps.clock().toISOString();

  async function call<C extends Contract>(
    id: string,
    what: string,
    contract: C,
    payload: RequestInputOf<C>,
    long = false,
  ): Promise<ReplyOf<C>> {
    try {
      return await services.call(contract, payload, { timeoutMs: long ? deps.timeouts.longOpMs : deps.timeouts.opMs });
    } catch (err) {
      const e = SysboxError.from(err);
      throw new SysboxError(e.code, `container ${id}: ${what}: ${e.message}`, { cause: err });
    }
  }

  /** A service that answers with a host path or ids of its choosing must not reach sysbox-runc. */
  function checkVolumeMounts(id: string, kind: VolumeKind, mounts: OciMount[]): OciMount[] {
    const expected = posix.join(deps.replyChecks.dataRoot, VOLUME_LAYOUT[kind].hostDir, id);
    for (const m of mounts) {
      if (m.source !== expected) {
        log.error({ id, kind, source: m.source, expected }, 'vol-mgr answered a mount source outside its volume dir: refused');
        throw new SysboxError('internal', `container ${id}: the ${kind} volume's mount source ${m.source} is not ${expected}: refused`);
      }
    }
    return mounts;
  }

  async function checkSubids(id: string, r: { uid: number; gid: number; size: number }): Promise<void> {
    const { subuidFile, subgidFile } = deps.replyChecks;
    try {
      assertIdsDelegated({ uid: r.uid, gid: r.gid, count: r.size }, await readDelegatedRanges(subuidFile, subgidFile), `container ${id}: subid allocation`);
    } catch (err) {
      log.error({ id, reply: r, err }, 'subid-allocator answered a range that is not delegated: refused');
      throw new SysboxError('internal', (err as Error).message, { cause: err });
    }
  }

  async function mustGet(id: string, notFound: string): Promise<ContainerRecord> {
    const rec = (await containers.get(id))?.value;
    if (!rec) throw new SysboxError('not-found', notFound);
    return rec;
  }

  /** Writes the record, unless someone else changed its lifecycle state meanwhile. */
  async function save(rec: ContainerRecord, expectState = rec.state): Promise<void> {
    await containers.mutate(rec.id, (cur) => {
      if (!cur) throw new SysboxError('not-found', `container ${rec.id} was removed while being changed`);
      if (cur.state !== expectState) {
        throw new SysboxError('failed-precondition', `container ${rec.id} changed state to ${cur.state} meanwhile`);
      }
      return { ...rec, updatedAt: now() };
    });
  }

  /** Writes what is about to be asked before asking (see ContainerRecord.requested). */
  async function recordIntent(rec: ContainerRecord, mark: (requested: ContainerRecord['requested']) => void): Promise<void> {
    mark(rec.requested);
    await save(rec);
  }

  /** rootfs-cloner's record of this container's clone, as create-clone would have answered it. */
  async function existingClone(id: string): Promise<{ rootfs: string; origWorkDir: string } | undefined> {
    const { clones } = await call(id, 'clone lookup', rootfsList, {});
    const c = clones.find((x) => x.id === id);
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

  /** Whether the record holds the mount of its `kind` volume (vol-mgr's `<data root>/<hostDir>/<id>`). */
  function hasVolumeMount(rec: ContainerRecord, kind: VolumeKind): boolean {
    return rec.containerMounts.some(
      (m) => posix.basename(m.source) === rec.id && posix.basename(posix.dirname(m.source)) === VOLUME_LAYOUT[kind].hostDir,
    );
  }

  /**
   * The mount of a volume an earlier, unanswered ReqMounts made: vol-mgr lists it ready with the
   * same mountpoint. Undefined when it is not there as asked (then already-exists stands).
   */
  async function adoptVolume(rec: ContainerRecord, kind: VolumeKind, dest: string): Promise<OciMount | undefined> {
    const { volumes } = await call(rec.id, `listing the ${kind} volume`, volList, { kind });
    const vol = volumes.find((v) => v.id === rec.id && v.mountpoint === dest);
    if (!vol) return undefined;
    const [mount] = checkVolumeMounts(rec.id, kind, [{ source: vol.path, destination: dest, type: 'bind', options: ['rbind', 'rprivate'] }]);
    log.info({ id: rec.id, kind, path: vol.path }, 'adopted a volume created by an earlier, unanswered ReqMounts');
    return mount;
  }

  function firstMapping(rec: ContainerRecord, what: string): { uid: number; gid: number } {
    const u = rec.uidMappings[0];
    const g = rec.gidMappings[0];
    if (!u || !g) throw new SysboxError('failed-precondition', `container ${rec.id} has no uid/gid mapping for ${what}`);
    return { uid: u.hostId, gid: g.hostId };
  }

  async function trackNetns(id: string, inode: number): Promise<string[]> {
    const after = await deps.netns.mutate(String(inode), (cur) => {
      const ids = cur?.ids ?? [];
      return ids.includes(id) ? undefined : { ids: [...ids, id] };
    });
    return after?.ids ?? [id];
  }

  async function untrackNetns(id: string, inode: number): Promise<void> {
    if (inode === 0) return;
    await deps.netns.mutate(String(inode), (cur) => {
      if (!cur?.ids.includes(id)) return undefined;
      const ids = cur.ids.filter((x) => x !== id);
      return ids.length === 0 ? REMOVE : { ids };
    });
  }

  async function inodeOf(id: string, netns: string): Promise<number> {
    try {
      return await host.inodeOf(netns);
    } catch (err) {
      throw new SysboxError('invalid-request', `container ${id}: unable to get inode for netns ${netns}: ${(err as Error).message}`);
    }
  }

  function containerConfig(rec: ContainerRecord): ContainerConfig {
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

  const SYNC_OUT_ATTEMPTS = 2;

  async function volSyncOut(rec: ContainerRecord): Promise<string[]> {
    if (config.noInnerImgPreload) return [];
    const failed: string[] = [];
    for (const kind of rec.volumeKinds) {
      // A vol-mgr killed in the middle of the copy never answers: the call times out. One more
      // try reaches its restarted instance (or a replica), which copies the whole volume again.
      for (let attempt = 1; ; attempt++) {
        try {
          await call(rec.id, `sync-out of the ${kind} volume`, volByKind[kind].syncOut, { id: rec.id }, true);
          break;
        } catch (err) {
          const retry = attempt < SYNC_OUT_ATTEMPTS && (isSysboxError(err, 'timeout') || isSysboxError(err, 'unavailable'));
          log.warn({ id: rec.id, kind, err, attempt }, retry ? 'volume sync-out failed; retrying' : 'volume sync-out failed');
          if (retry) continue;
          failed.push(kind);
          break;
        }
      }
    }
    return failed;
  }

  const mappings = (list: unknown, what: string): IdMapping[] =>
    (list as unknown[]).map((m, i) => check(IdMapping, m, `${what}[${i}]`));

  return {
    get: async (id) => (await containers.get(checkId(id)))?.value,

    async register(req) {
      const id = checkId(req.id);
      const rootfs = check(HostPath, req.rootfs, `container ${id}: rootfs`);
      const userns = checkNsPath(req.userns, `container ${id}: userns`);
      const netns = checkNsPath(req.netns, `container ${id}: netns`);
      const uidMappings = mappings(req.uidMappings, `container ${id}: uidMappings`);
      const gidMappings = mappings(req.gidMappings, `container ${id}: gidMappings`);
      return serialized(id, async () => {
        const existing = (await containers.get(id))?.value;
        let rec: ContainerRecord;
        if (!existing) {
          let rootfsOnOvfs: boolean;
          try {
            rootfsOnOvfs = await host.isOnOverlay(rootfs);
          } catch (err) {
            throw new SysboxError('invalid-request', `container ${id}: rootfs ${rootfs}: ${(err as Error).message}`);
          }
          rec = {
            id,
            state: 'started',
            rootfs,
            rootfsOnOvfs,
            rmWatchPath: removalWatchPath(rootfs),
            userns: '',
            netns: '',
            netnsInode: 0,
            uidMappings: [],
            gidMappings: [],
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
            registeredAt: now(),
            updatedAt: now(),
          };
        } else {
          if (existing.state !== 'stopped') {
            throw new SysboxError('failed-precondition', `redundant container registration for container ${id}`);
          }
          rec = { ...existing, state: 'restarted' };
        }
        rec.netns = netns;
        rec.userns = userns;
        if (!rec.subidAllocated) {
          rec.uidMappings = uidMappings;
          rec.gidMappings = gidMappings;
        }
        if (netns !== '') {
          const inode = await inodeOf(id, netns);
          const sharing = await trackNetns(id, inode);
          rec.netnsInode = inode;
          // Containers sharing a netns share the first one's userns and maps.
          if (sharing.length > 1 && userns === '') {
            const first = sharing[0] === id ? undefined : (await containers.get(sharing[0]!))?.value;
            if (!first) {
              throw new SysboxError(
                'failed-precondition',
                `container ${id} shares net-ns with other containers, but unable to find info for those`,
              );
            }
            rec.userns = first.userns;
            rec.uidMappings = first.uidMappings;
            rec.gidMappings = first.gidMappings;
          }
        }
        if (!existing) {
          try {
            await containers.create(id, rec);
          } catch (err) {
            if (isSysboxError(err, 'already-exists')) {
              throw new SysboxError('failed-precondition', `redundant container registration for container ${id}`);
            }
            throw err;
          }
          log.info({ id }, 'registered new container');
        } else {
          await save(rec, 'stopped');
          deps.onWatch?.(id, undefined);
          log.info({ id }, 'registered container');
        }
        return containerConfig(rec);
      });
    },

    async update(req) {
      const id = checkId(req.id);
      const userns = checkNsPath(req.userns, `container ${id}: userns`);
      const netns = checkNsPath(req.netns, `container ${id}: netns`);
      const uidMappings = mappings(req.uidMappings, `container ${id}: uidMappings`);
      const gidMappings = mappings(req.gidMappings, `container ${id}: gidMappings`);
      return serialized(id, async () => {
        const rec = await mustGet(id, `can't update container ${id}; not found in container table`);
        if (rec.netns === '' && netns !== '') {
          const inode = await inodeOf(id, netns);
          await trackNetns(id, inode);
          rec.netns = netns;
          rec.netnsInode = inode;
        }
        if (rec.userns === '' && userns !== '') rec.userns = userns;
        if (rec.uidMappings.length === 0 && uidMappings.length > 0) rec.uidMappings = uidMappings;
        if (rec.gidMappings.length === 0 && gidMappings.length > 0) rec.gidMappings = gidMappings;
        rec.rootfsUidShiftType = req.rootfsUidShiftType;

        // An ID-mapped rootfs on overlayfs keeps its upper dir chowned while it runs (overlayfs
        // cannot ID-map it). sysbox-runc has chowned it already, as with upstream's manager:
        // rootfs-cloner only records it, so stop and pause can give it back its at-rest owner.
        if (rec.rootfsOnOvfs && req.rootfsUidShiftType === ShiftType.IDMappedMount && !rec.rootfsOvfsUpperChowned) {
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
        await save(rec);
      });
    },

    async unregister(id) {
      id = checkId(id);
      return serialized(id, async () => {
        const rec = await mustGet(id, `can't unregister container ${id}; not found in container table`);
        if (rec.state === 'stopped') {
          throw new SysboxError('failed-precondition', `redundant container unregistration for container ${id}`);
        }
        const before = rec.state;
        const marks = [...rec.shiftfsMarks, ...rec.requested.shiftfs];
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
          const clone = await existingClone(id).catch(() => undefined);
          if (clone) adoptClone(rec, clone);
        }
        if (rec.rootfsOvfsUpperChowned && !rec.autoRemove) {
          await call(id, 'revert of the rootfs upper-dir chown', rootfsRevertUpper, { id }, true);
          rec.rootfsOvfsUpperChowned = false;
        }
        if (rec.mountsPrepped) {
          try {
            await call(id, 'revert of mount preparation', volRevertPrep, { id }, true);
            rec.mountsPrepped = false;
          } catch (err) {
            // Kept on the record: the removal retries it.
            log.warn({ id, err }, 'failed to revert mount preparation');
          }
        }
        await untrackNetns(id, rec.netnsInode).catch((err: unknown) => log.warn({ id, err }, 'netns untrack failed'));
        rec.userns = '';
        rec.netns = '';
        rec.netnsInode = 0;
        if (!rec.subidAllocated) {
          rec.uidMappings = [];
          rec.gidMappings = [];
        }
        rec.state = 'stopped';
        await save(rec, before);
        try {
          if (!rec.autoRemove) {
            const failed = await volSyncOut(rec);
            if (failed.length > 0) log.warn({ id, failed }, 'sync-out failed for some volumes');
          }
          if (rec.rootfsCloned) await call(id, 'container-stopped notice', rootfsContainerStopped, { id });
        } finally {
          deps.onWatch?.(id, rec.rmWatchPath);
          log.info({ id, watch: rec.rmWatchPath }, 'unregistered container');
        }
      });
    },

    async subidAlloc(id, size) {
      id = checkId(id);
      return serialized(id, async () => {
        const rec = await mustGet(id, `container ${id} is not registered`);
        // Kept across restarts: a restarted container gets its earlier range back.
        if (!rec.subidAllocated) {
          await recordIntent(rec, (r) => (r.subid = true));
          // The allocator answers the same range for the same id: a retry after a lost reply is safe.
          const r = await call(id, 'subid allocation', subidAlloc, { id, size });
          await checkSubids(id, r);
          rec.uidMappings = [...rec.uidMappings, { containerId: 0, hostId: r.uid, size: r.size }];
          rec.gidMappings = [...rec.gidMappings, { containerId: 0, hostId: r.gid, size: r.size }];
          rec.subidAllocated = true;
          rec.requested.subid = false;
          await save(rec);
        }
        return firstMapping(rec, 'subid allocation');
      });
    },

    async prepMounts(id, uid, gid, prepList) {
      id = checkId(id);
      const sources = prepList.map((p, i) => ({
        source: check(HostPath, p.source, `container ${id}: prepList[${i}].source`),
        exclusive: p.exclusive,
      }));
      return serialized(id, async () => {
        const rec = await mustGet(id, `container ${id} is not registered`);
        const needPrep = [];
        for (const s of sources) {
          // A source that can be ID-mapped needs no chown.
          if (config.overlayfsOnIDMapMountOk && (await host.idMapMountSupportedOnPath(s.source).catch(() => false))) continue;
          needPrep.push(s);
        }
        if (needPrep.length === 0) return;
        // Recorded before asking: revert-prep of a container vol-mgr holds nothing for reverts nothing.
        if (!rec.mountsPrepped) {
          rec.mountsPrepped = true;
          await save(rec);
        }
        await call(id, 'mount source preparation', volPrep, { id, uid, gid, sources: needPrep }, true);
      });
    },

    async reqMounts(id, rootfsUidShiftType, reqList) {
      id = checkId(id);
      const requests = reqList.map((r, i) => {
        const kind = VOLUME_KINDS[r.kind];
        if (kind === undefined) {
          throw new SysboxError('invalid-request', `container ${id}: invalid mount request kind ${r.kind} (0..6)`);
        }
        return { kind, dest: check(ContainerPath, r.dest, `container ${id}: reqList[${i}].dest ${JSON.stringify(String(r.dest).slice(0, 200))}`) };
      });
      const extra = config.mountBinfmtMisc ? [BINFMT_MISC_MOUNT] : [];
      return serialized(id, async () => {
        const rec = await mustGet(id, `container ${id} is not registered`);
        if (rec.state === 'restarted') return [...rec.containerMounts, ...extra];

        // Rootfs ID-shift   volume owner     chown on sync
        // ID-mapped         root:root        no
        // shiftfs, chown    host uid:gid     yes
        // no-shift          host uid:gid     no
        let owner: { uid: number; gid: number };
        let chownOnSync: boolean;
        switch (rootfsUidShiftType) {
          case ShiftType.IDMappedMount:
            owner = { uid: 0, gid: 0 };
            chownOnSync = false;
            break;
          case ShiftType.Shiftfs:
          case ShiftType.Chown:
            owner = firstMapping(rec, 'volume ownership');
            chownOnSync = true;
            break;
          case ShiftType.NoShift:
            owner = firstMapping(rec, 'volume ownership');
            chownOnSync = false;
            break;
          default:
            throw new SysboxError('invalid-request', `container ${id}: unexpected rootfs ID shift type ${rootfsUidShiftType}`);
        }
        // Kinds recorded by an earlier ReqMounts that never answered (the gateway died while
        // vol-mgr was creating): their volume may exist although this record has no mount for it.
        const unanswered = new Set(rec.volumeKinds.filter((k) => !hasVolumeMount(rec, k)));
        // Recorded before creating, so a crash in between still leaves removal a volume to destroy
        // (destroy of one that was never made answers not-found, which removal takes as done).
        rec.volumeKinds = [...new Set([...rec.volumeKinds, ...requests.map((r) => r.kind)])];
        await save(rec);
        const mounts: OciMount[] = [];
        try {
          for (const { kind, dest } of requests) {
            const create = { id, rootfs: rec.rootfs, mountpoint: dest, uid: owner.uid, gid: owner.gid, chownOnSync, perm: VOLUME_LAYOUT[kind].perm };
            try {
              const created = await call(id, `failed to setup mounts backing ${dest}`, volByKind[kind].create, create, true);
              mounts.push(...checkVolumeMounts(id, kind, created.mounts));
            } catch (err) {
              const adopted = isSysboxError(err, 'already-exists') && unanswered.has(kind) ? await adoptVolume(rec, kind, dest) : undefined;
              if (!adopted) throw err;
              mounts.push(adopted);
            }
          }
        } finally {
          rec.containerMounts = [...mounts, ...facts.linuxHeaderMounts, ...facts.libModMounts];
          await save(rec);
        }
        return [...rec.containerMounts, ...extra];
      });
    },

    async reqShiftfsMark(id, marks) {
      id = checkId(id);
      const mounts = marks.map((m, i) => ({
        source: check(HostPath, m.source, `container ${id}: shiftfsMarks[${i}].source`),
        readonly: m.readonly,
      }));
      return serialized(id, async () => {
        const rec = await mustGet(id, `container ${id} is not registered`);
        if (rec.shiftfsMarks.length === 0) {
          await recordIntent(rec, (r) => (r.shiftfs = mounts));
          const r = await call(id, 'shiftfs mark', shiftfsMark, { id, mounts, createMarkpoint: true });
          rec.shiftfsMarks = r.mounts;
          rec.requested.shiftfs = [];
          await save(rec);
        }
        return rec.shiftfsMarks;
      });
    },

    async reqFsState(id, rootfs) {
      id = checkId(id);
      const root = check(HostPath, rootfs, `container ${id}: rootfs`);
      await mustGet(id, `container ${id} is not registered`);
      if (facts.linuxHeaderMounts.length === 0) return [];
      const distro = await host.distroOf(root);
      if (distro === undefined || distro === facts.hostDistro) return [];
      const cntrPath = linuxHeaderPath(distro, facts.kernelRelease);
      if (cntrPath === facts.hostKernelHdrPath) return [];
      return [
        { kind: FS_DIR, path: posix.dirname(cntrPath), mode: 0o755, dst: '' },
        { kind: FS_SOFTLINK, path: cntrPath, mode: 0o644, dst: facts.hostKernelHdrPath },
      ];
    },

    async pause(id) {
      id = checkId(id);
      return serialized(id, async () => {
        const rec = await mustGet(id, `can't pause container ${id}; not found in container table`);
        if (rec.rootfsOvfsUpperChowned) {
          await call(id, 'revert of the rootfs upper-dir chown', rootfsRevertUpper, { id }, true);
          rec.rootfsOvfsUpperChowned = false;
          await save(rec);
        } else if (rec.rootfsCloned && rec.rootfsUidShiftType === ShiftType.Chown) {
          await call(id, 'revert of the clone chown', rootfsRevertChown, { id }, true);
        }
        const failed = await volSyncOut(rec);
        if (failed.length > 0) {
          throw new SysboxError('internal', `container ${id}: sync-out for volume backing ${failed.join(', ')} failed`);
        }
      });
    },

    async resume(id) {
      id = checkId(id);
      return serialized(id, async () => {
        const rec = await mustGet(id, `can't resume container ${id}; not found in container table`);
        if (rec.rootfsUidShiftType === ShiftType.IDMappedMount && rec.rootfsOnOvfs && rec.rootfsOvfsUpper !== '') {
          const { uid, gid } = firstMapping(rec, 'resume');
          await call(
            id,
            'shift of the rootfs upper dir',
            rootfsShiftUpper,
            { id, upperDir: rec.rootfsOvfsUpper, uidOffset: uid, gidOffset: gid },
            true,
          );
          rec.rootfsOvfsUpperChowned = true;
          await save(rec);
        } else if (rec.rootfsCloned && rec.rootfsUidShiftType === ShiftType.Chown) {
          const { uid, gid } = firstMapping(rec, 'resume');
          await call(id, 'clone chown', rootfsChownClone, { id, uidOffset: uid, gidOffset: gid }, true);
        }
      });
    },

    async cloneRootfs(id) {
      id = checkId(id);
      return serialized(id, async () => {
        const rec = await mustGet(id, `container ${id} is not registered`);
        if (!rec.rootfsCloned) {
          const adoptable = rec.requested.clone;
          await recordIntent(rec, (r) => (r.clone = true));
          let clone: { rootfs: string; origWorkDir: string } | undefined;
          try {
            clone = await call(id, 'rootfs clone', rootfsCreateClone, { id, origRootfs: rec.rootfs }, true);
          } catch (err) {
            // An earlier ReqCloneRootfs whose reply was lost (this gateway died) made it already.
            clone = isSysboxError(err, 'already-exists') && adoptable ? await existingClone(id) : undefined;
            if (!clone) throw err;
            log.info({ id, rootfs: clone.rootfs }, 'adopted a clone made by an earlier, unanswered ReqCloneRootfs');
          }
          adoptClone(rec, clone);
          await save(rec);
        }
        return rec.rootfs;
      });
    },

    async chownClonedRootfs(id, uidOffset, gidOffset) {
      id = checkId(id);
      return serialized(id, async () => {
        await mustGet(id, `container ${id} is not registered`);
        await call(id, 'clone chown', rootfsChownClone, { id, uidOffset, gidOffset }, true);
      });
    },

    async revertClonedRootfsChown(id) {
      id = checkId(id);
      return serialized(id, async () => {
        await mustGet(id, `container ${id} is not registered`);
        await call(id, 'revert of the clone chown', rootfsRevertChown, { id }, true);
      });
    },

    async removeContainer(id) {
      return serialized(id, async () => {
        const rec = (await containers.get(id))?.value;
        if (!rec || rec.state !== 'stopped') return false;
        // Every step is idempotent (a step done before answers not-found) and every step is tried;
        // if one failed for another reason, the record stays so the watch's next reload retries,
        // rather than forgetting a volume, a range or a clone that still exists.
        const failed: string[] = [];
        const releaseStep = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
          try {
            await fn();
          } catch (err) {
            if (isSysboxError(err, 'not-found')) return;
            log.error({ id, err }, `removal: ${what} failed`);
            failed.push(what);
          }
        };
        for (const kind of rec.volumeKinds) {
          await releaseStep(`destroy of the ${kind} volume`, () =>
            call(id, `destroy of the ${kind} volume`, volByKind[kind].destroy, { id }, true),
          );
        }
        if (rec.subidAllocated || rec.requested.subid) await releaseStep('subid free', () => call(id, 'subid free', subidFree, { id }));
        if (rec.rootfsCloned || rec.requested.clone) {
          await releaseStep('clone removal', () => call(id, 'clone removal', rootfsRemoveClone, { id }, true));
        }
        if (rec.mountsPrepped) {
          await releaseStep('revert of mount preparation', () => call(id, 'revert of mount preparation', volRevertPrep, { id }, true));
        }
        const marks = [...rec.shiftfsMarks, ...rec.requested.shiftfs];
        if (marks.length > 0) await releaseStep('shiftfs unmark', () => call(id, 'shiftfs unmark', shiftfsUnmark, { id, mounts: marks }));
        if (failed.length > 0) {
          throw new SysboxError('unavailable', `container ${id}: removal incomplete (${failed.join(', ')}); will retry`);
        }
        await untrackNetns(id, rec.netnsInode).catch(() => undefined);
        await containers.mutate(id, (cur) => (cur?.state === 'stopped' ? REMOVE : undefined));
        deps.onWatch?.(id, undefined);
        log.info({ id }, 'released resources for container');
        return true;
      });
    },

    async runningPaths() {
      const all = await containers.list();
      return all.filter((v) => v.value.state !== 'stopped').map((v) => ({ id: v.value.id, path: v.value.rmWatchPath }));
    },

    async watchedPaths() {
      const all = await containers.list();
      return all.filter((v) => v.value.state === 'stopped').map((v) => ({ id: v.value.id, path: v.value.rmWatchPath }));
    },
  };
}
