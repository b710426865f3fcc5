/**
 * One inner-store volume kind (upstream volMgr): host dirs `<dataRoot>/<hostDir>/<id>` that a
 * container's root owns, filled from the rootfs on create (sync-in) and copied back on sync-out.
 * State lives in KV so a restart or kill -9 of the daemon forgets nothing.
 */
import { chmod, chown, mkdir, readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  ContainerId,
  ContainerPath,
  FileMode,
  HostPath,
  Id,
  SysboxError,
  Timestamp,
  limitMs,
  type TimeLimit,
  VOLUME_LAYOUT,
  VolumeKindSchema,
  type VolCreateReply,
  type VolCreateRequest,
  type VolMgr,
  type VolumeInfo,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import { run } from '@sysbox-mgr-ts/exec/run';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { REMOVE, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import { overlayOptions, topMountAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import { createKeyedLock } from '@sysbox-mgr-ts/service-kit';
import type { Logger } from 'pino';
import { createInFlight } from './in-flight.js';
import { exists, mkdirChainInside, resolveInRoot, resolveInside } from './paths.js';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import { rsyncTree, type ScanIds } from './rsync.js';
import { volumeDirs } from './volume-dirs.js';
import { reconcileVolumes } from './volumes-reconcile.js';

export const VolumeRecord = z.object({
  kind: VolumeKindSchema,
  id: ContainerId,
  path: HostPath,
  rootfs: HostPath,
  mountpoint: ContainerPath,
  /**
   * The mountpoint with the image's symlinks resolved within the rootfs (`/var/lib/docker` ->
   * `/data/docker`): where sync-in reads and sync-out writes. Absent in records from before it.
   */
  resolvedMountpoint: ContainerPath.optional(),
  /** Where sync-out copies to: the overlay upper dir when the rootfs is overlayfs, else the rootfs. */
  syncOutBase: HostPath,
  uid: Id,
  gid: Id,
  chownOnSync: z.boolean(),
  perm: FileMode,
  createdAt: Timestamp,
  /** `creating` until sync-in finished; a record left `creating` by a crash is dropped on start. */
  state: z.enum(['creating', 'ready']),
});
export type VolumeRecord = z.infer<typeof VolumeRecord>;

export interface VolumeDeps {
  kind: VolumeKind;
  dataRoot: string;
  store: KvStateStore<VolumeRecord>;
  scanIds: ScanIds;
  readMounts: () => Promise<MountEntry[]>;
  log: Logger;
  /** Rootfs roots and delegated ids: checked on requests and again on records read back. */
  guard: HostGuard;
  /** Upstream's sync flag (off with --no-sync, its disable-inner-image-preload). */
  sync: boolean;
  syncTimeoutMs: number;
  /** Extra rsync flags; tests throttle copies with --bwlimit to catch them mid-way. */
  rsyncExtraArgs?: readonly string[];
  now?: () => Date;
  metrics?: AppMetrics;
}

export interface ReconcileReport {
  kind: VolumeKind;
  kept: string[];
  /** Records whose dir is gone: dropped. */
  vanished: string[];
  /** Records a crash left half-created: dir removed, record dropped. */
  unfinished: string[];
  /** Dirs under the host dir that no record owns. */
  orphans: string[];
  removedOrphans: string[];
}

export interface VolumeManager extends VolMgr {
  readonly kind: VolumeKind;
  readonly hostDir: string;
  createVol(req: VolCreateRequest, log?: Logger): Promise<VolCreateReply>;
  destroyVol(id: string, log?: Logger): Promise<void>;
  /** `timeLimit`: the caller's bound of the copy (absent: --sync-timeout-ms). */
  syncOut(id: string, log?: Logger, timeLimit?: TimeLimit): Promise<void>;
  /**
   * Every volume of this kind. `sizes: false` leaves sizeBytes 0 and runs no `du`: a list page
   * sizes only its own volumes (sizeOf), where one `du` per volume per page made a paged list
   * quadratic (17 s for 300 volumes).
   */
  list(opts?: { sizes?: boolean }): Promise<VolumeInfo[]>;
  /** How many volumes of this kind: the store's keys, one request, no record read. */
  count(): Promise<number>;
  /** The bytes a volume takes on disk (`du`); 0 when unknown. */
  sizeOf(id: string): Promise<number>;
  reconcile(opts: { removeOrphans: boolean }): Promise<ReconcileReport>;
  /** Waits for operations in flight (up to graceMs), then cancels the rest. */
  drain(graceMs: number): Promise<void>;
}

export function createVolumeManager(deps: VolumeDeps): VolumeManager {
  const layout = VOLUME_LAYOUT[deps.kind];
  const dirs = volumeDirs(deps);
  const { hostDir, volPathOf, ensureHostDir, removeVolDir, checkRecordPath } = dirs;
  const locked = createKeyedLock();
  const inFlight = createInFlight();
  const now = deps.now ?? (() => new Date());

  const getRecord = async (id: string): Promise<VolumeRecord> => {
    const rec = await deps.store.get(id);
    if (!rec) throw new SysboxError('not-found', `no ${deps.kind} volume for container ${id}`);
    return rec.value;
  };

  /**
   * A root-owned volume is what upstream makes for an ID-mapped rootfs (the mount maps it); any
   * other owner, and every id a sync shifts to, must be subordinate, never a host user.
   */
  const checkOwner = async (v: {
    id: string;
    uid: number;
    gid: number;
    chownOnSync: boolean;
  }): Promise<void> => {
    if (v.uid === 0 && v.gid === 0 && !v.chownOnSync) return;
    await deps.guard.idsDelegated({ uid: v.uid, gid: v.gid }, `owner of the ${deps.kind} volume of ${v.id}`);
  };

  /** Where a rootfs on overlayfs keeps its writable layer; undefined when it is not an overlay mount. */
  const overlayUpperOf = async (rootfs: string): Promise<string | undefined> => {
    const real = await realpath(rootfs);
    const top = topMountAt(await deps.readMounts(), real);
    if (top?.fsType !== 'overlay') return undefined;
    return overlayOptions(top.superOptions).upperDir;
  };

  /**
   * A copy's bound: the caller's (the gateway's, from the RPC it serves: none for ReqMounts'
   * sync-in, as sysbox-runc waits for it as long as it takes), else --sync-timeout-ms.
   */
  const boundOf = (limit: TimeLimit | undefined): number =>
    limit === undefined ? deps.syncTimeoutMs : limitMs(limit);

  /** What a create answers, the first time and for an identical repeat alike: the volume's bind mount. */
  const createReply = (path: string, mountpoint: string): VolCreateReply => ({
    mounts: [{ source: path, destination: mountpoint, type: 'bind', options: ['rbind', 'rprivate'] }],
  });

  const createVol = async (req: VolCreateRequest, log = deps.log): Promise<VolCreateReply> => {
    const path = volPathOf(req.id);
    const perm = req.perm ?? layout.perm;
    const rootfsStat = await stat(req.rootfs).catch(() => undefined);
    if (!rootfsStat?.isDirectory())
      throw new SysboxError('invalid-request', `rootfs ${req.rootfs} is not a directory`);
    await checkOwner(req);
    // Sync-in reads from it and sync-out writes into it: it must be a runtime's rootfs, not a host tree.
    const rootfs = await deps.guard.allowedRootfs(
      req.rootfs,
      `rootfs of the ${deps.kind} volume of ${req.id}`,
    );
    const upper = await overlayUpperOf(rootfs);
    const syncOutBase =
      upper === undefined ? rootfs : await deps.guard.allowedRootfs(upper, `overlay upper dir of ${rootfs}`);
    // The image may link the mountpoint elsewhere (/var/lib/docker -> /data/docker): followed
    // within the rootfs, as sysbox-runc mounts the volume there.
    const resolvedMountpoint = await resolveInRoot(rootfs, req.mountpoint);
    const record: VolumeRecord = {
      kind: deps.kind,
      id: req.id,
      path,
      rootfs,
      mountpoint: req.mountpoint,
      resolvedMountpoint,
      syncOutBase,
      uid: req.uid,
      gid: req.gid,
      chownOnSync: req.chownOnSync,
      perm,
      createdAt: now().toISOString(),
      state: 'creating',
    };
    // The same create again (a caller whose answer was lost in a reconnect) gets the same answer:
    // creates of one id run one after another, so a repeat finds the first one's ready record.
    const existing = (await deps.store.get(req.id))?.value;
    if (
      existing?.state === 'ready' &&
      existing.mountpoint === req.mountpoint &&
      existing.rootfs === rootfs &&
      existing.uid === req.uid &&
      existing.gid === req.gid &&
      existing.chownOnSync === req.chownOnSync
    ) {
      return createReply(checkRecordPath(existing, log), req.mountpoint);
    }
    await ensureHostDir();
    await deps.store.create(req.id, record);
    let madeDir = false;
    try {
      if (await exists(path)) {
        throw new SysboxError(
          'already-exists',
          `${path} already exists and no record owns it (an orphan: see --remove-orphans)`,
        );
      }
      await mkdir(path);
      madeDir = true;
      await chmod(path, perm);
      await chown(path, req.uid, req.gid);
      // Sync-in always: an image's preloaded inner images live there (--no-sync stops only
      // sync-out, as upstream's disable-inner-image-preload).
      const source = await resolveInside(rootfs, resolvedMountpoint, 'volume source');
      if (await exists(source)) {
        await rsyncTree({
          src: source,
          dest: path,
          shift: req.chownOnSync
            ? { uid: req.uid, gid: req.gid, direction: 'up', scanIds: deps.scanIds }
            : undefined,
          timeoutMs: boundOf(req.timeLimit),
          signal: inFlight.signal,
          extraArgs: deps.rsyncExtraArgs,
          log,
          what: `${deps.kind} sync-in ${req.id}`,
          metrics: deps.metrics,
          op: 'sync-in',
        });
      }
      await deps.store.mutate(req.id, (cur) => (cur ? { ...cur, state: 'ready' } : undefined));
    } catch (err) {
      if (madeDir)
        await removeVolDir(path).catch((e: unknown) =>
          log.warn({ err: e, path }, 'cleanup after failed create'),
        );
      await deps.store
        .delete(req.id)
        .catch((e: unknown) => log.warn({ err: e }, 'dropping record after failed create'));
      throw err;
    }
    log.info({ kind: deps.kind, id: req.id, path, syncOutBase }, 'volume created');
    return createReply(path, req.mountpoint);
  };

  const syncOut = async (id: string, log = deps.log, timeLimit?: TimeLimit): Promise<void> => {
    const rec = await getRecord(id);
    if (!deps.sync) return;
    const path = checkRecordPath(rec, log);
    if (!(await exists(rec.rootfs)) || !(await exists(rec.syncOutBase))) {
      log.info({ kind: deps.kind, id, rootfs: rec.rootfs }, 'sync-out skipped: the rootfs is gone');
      return;
    }
    // The record says where to write and as whom; a forged one must not turn that at the host.
    await checkOwner(rec);
    await deps.guard.allowedRootfs(rec.rootfs, `recorded rootfs of the ${deps.kind} volume of ${id}`);
    await deps.guard.allowedRootfs(
      rec.syncOutBase,
      `recorded sync-out base of the ${deps.kind} volume of ${id}`,
    );
    const inner = rec.resolvedMountpoint ?? rec.mountpoint;
    const target = await resolveInside(rec.syncOutBase, inner, 'sync-out target');
    if (!(await exists(target))) {
      if ((await readdir(path)).length === 0) return;
      await mkdirChainInside(rec.syncOutBase, inner, rec.perm, rec.rootfs);
    }
    await rsyncTree({
      src: path,
      dest: target,
      shift: rec.chownOnSync
        ? { uid: rec.uid, gid: rec.gid, direction: 'down', scanIds: deps.scanIds }
        : undefined,
      timeoutMs: boundOf(timeLimit),
      signal: inFlight.signal,
      watch: target,
      extraArgs: deps.rsyncExtraArgs,
      log,
      what: `${deps.kind} sync-out ${id}`,
      metrics: deps.metrics,
      op: 'sync-out',
    });
  };

  const destroyVol = async (id: string, log = deps.log): Promise<void> => {
    const rec = await getRecord(id);
    if (rec.id !== id)
      throw new SysboxError('internal', `record under ${id} is for ${rec.id}: refusing to use it`);
    await removeVolDir(checkRecordPath(rec, log));
    await deps.store.mutate(id, () => REMOVE);
    log.info({ kind: deps.kind, id }, 'volume destroyed');
  };

  const guarded =
    <A extends unknown[], R>(fn: (id: string, ...rest: A) => Promise<R>) =>
    (id: string, ...rest: A): Promise<R> =>
      inFlight.track(locked(id, () => fn(id, ...rest)));

  const mgr: VolumeManager = {
    kind: deps.kind,
    hostDir,
    createVol: (req, log) => inFlight.track(locked(req.id, () => createVol(req, log))),
    syncOut: guarded(syncOut),
    destroyVol: guarded(destroyVol),
    async syncOutAndDestroyAll() {
      const destroyed: string[] = [];
      const failures: { kind: VolumeKind; id: string; error: string }[] = [];
      for (const { value } of await deps.store.list()) {
        try {
          await mgr.syncOut(value.id);
        } catch (err) {
          failures.push({ kind: deps.kind, id: value.id, error: `sync-out: ${(err as Error).message}` });
        }
        try {
          await mgr.destroyVol(value.id);
          destroyed.push(value.id);
        } catch (err) {
          failures.push({ kind: deps.kind, id: value.id, error: `destroy: ${(err as Error).message}` });
        }
      }
      for (const f of failures) deps.log.warn(f, 'sync-out-and-destroy-all failure');
      return { destroyed, failures };
    },
    sizeOf: (id) => sizeOnDisk(volPathOf(id), deps.log),
    count: async () => (await deps.store.keys()).length,
    async list(opts = {}) {
      const out: VolumeInfo[] = [];
      for (const { value } of await deps.store.list()) {
        out.push({
          kind: value.kind,
          id: value.id,
          path: volPathOf(value.id),
          mountpoint: value.mountpoint,
          syncOutTarget: join(value.syncOutBase, value.resolvedMountpoint ?? value.mountpoint),
          uid: value.uid,
          gid: value.gid,
          chownOnSync: value.chownOnSync,
          sizeBytes: opts.sizes === false ? 0 : await sizeOnDisk(volPathOf(value.id), deps.log),
          createdAt: value.createdAt,
        });
      }
      return out;
    },
    reconcile: ({ removeOrphans }) => reconcileVolumes(deps, dirs, removeOrphans),
    drain: (graceMs) => inFlight.drain(graceMs),
  };
  return mgr;
}

async function sizeOnDisk(path: string, log: Logger): Promise<number> {
  try {
    const { stdout } = await run('du', ['-s', '--block-size=1', path], { timeout: 60_000, logger: log });
    return Number.parseInt(stdout.split('\t')[0] ?? '0', 10) || 0;
  } catch (err) {
    log.warn({ err, path }, 'size of volume unknown');
    return 0;
  }
}
