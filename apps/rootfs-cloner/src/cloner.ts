/**
 * Rootfs clones (upstream rootfsCloner): a metacopy overlay over the original rootfs' lower layers,
 * bind-mounted over the original rootfs, upper and work dirs, so a chown of the clone copies
 * metadata only. Every clone and upper-dir shift is recorded in KV before the host is touched,
 * so a restarted daemon finds and re-establishes them. A clone of an earlier boot is not brought
 * back: its mounts went with the reboot, its container no longer runs, and its binds over the
 * runtime's upper and work dirs would keep the runtime from mounting the rootfs again; it is
 * removed at start (cloneAtStart), and a restarted container gets a new clone.
 */
import { mkdir, realpath, rmdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';
import {
  SysboxError,
  type CloneInfo,
  type RootfsCloner,
  type UpperShiftInfo,
  type rootfsCreateClone,
  type rootfsRemoveAll,
} from '@sysbox-mgr-ts/contracts';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { readBootId, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import { topMountAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import { createKeyedLock, type Logger } from '@sysbox-mgr-ts/service-kit';
import { createCloneMounts, isOverlayMounted } from './clone-mounts.js';
import { offsetsDelegated, recordedRuntimeDirsAllowed } from './checks.js';
import { exists } from './fs.js';
import type { Mounter } from './mounter.js';
import { planClone } from './overlay-plan.js';
import { createReconciler, type ReconcileReport } from './reconcile.js';
import { checkRecord as checkRecordOf, cloneDirsOf, type CloneRecord, type UpperRecord } from './records.js';
import { createShiftRunner, type ShiftIds } from './shift-runner.js';
import { createUpperShifts } from './uppers.js';

export { CLONER_DIR, CloneRecord, UpperRecord, cloneAtStart } from './records.js';
export type { ShiftIds } from './shift-runner.js';
export type { ReconcileReport } from './reconcile.js';

export interface ClonerDeps {
  dataRoot: string;
  clones: KvStateStore<CloneRecord>;
  uppers: KvStateStore<UpperRecord>;
  mounter: Mounter;
  shiftIds: ShiftIds;
  log: Logger;
  /** The kernel page size: mount(2) takes at most one page of options. */
  pageSize: number;
  shiftTimeoutMs: number;
  readMounts: () => Promise<MountEntry[]>;
  /** Rootfs roots and delegated ids: checked on requests and again on records read back from KV. */
  guard: HostGuard;
  now?: () => Date;
  /** The kernel's boot id, stamped on clone records; read from /proc when left out. */
  bootId?: string;
}

export interface Cloner extends RootfsCloner {
  /** `alreadyShifted`: the runtime chowned the dir itself; only record the shift. */
  shiftUpper(
    id: string,
    upperDir: string,
    uidOffset: number,
    gidOffset: number,
    alreadyShifted?: boolean,
  ): Promise<void>;
  revertUpper(id: string): Promise<void>;
  list(): Promise<{ clones: CloneInfo[]; uppers: z.infer<typeof UpperShiftInfo>[] }>;
  /** How many clones and upper-dir shifts: the stores' keys, one request each, no record read. */
  summary(): Promise<{ clones: number; uppers: number }>;
  /**
   * Checks every recorded clone against the host: adopt, re-establish, or report and drop; then
   * finishes every clone chown or upper-dir shift (or revert) a killed daemon left half done.
   */
  reconcile(): Promise<ReconcileReport>;
}

type CreateReply = z.infer<typeof rootfsCreateClone.reply>;
type RemoveAllReply = z.infer<typeof rootfsRemoveAll.reply>;

export function createCloner(deps: ClonerDeps): Cloner {
  const { mounter, log } = deps;
  const now = deps.now ?? (() => new Date());
  const bootId = deps.bootId ?? readBootId();
  /** One operation per container at a time; different containers run in parallel. */
  const serialized = createKeyedLock();
  const mounts = createCloneMounts(mounter, deps.readMounts);
  const { placeBinds, mountOverlay, teardown } = mounts;
  const runShift = createShiftRunner(deps);
  const checkRecord = (id: string, rec: CloneRecord): CloneRecord =>
    checkRecordOf(deps.dataRoot, log, id, rec);

  const checkRecordedRuntimeDirs = (rec: CloneRecord) => recordedRuntimeDirsAllowed(deps.guard, rec);
  const checkOffsets = (uidOffset: number, gidOffset: number, what: string) =>
    offsetsDelegated(deps.guard, uidOffset, gidOffset, what);

  const mustGet = async (id: string): Promise<CloneRecord> => {
    const rec = await deps.clones.get(id);
    if (!rec) throw new SysboxError('not-found', `no rootfs clone for container ${id}`);
    return checkRecord(id, rec.value);
  };

  const update = (id: string, patch: Partial<CloneRecord>) =>
    deps.clones.mutate(id, (cur) => (cur ? { ...cur, ...patch } : undefined));

  /**
   * Shifts the clone's own overlay, where its binds over the runtime's dirs stay in place: they
   * are aliases of the same overlay and dirs, not under mergedDir, and the walk does not cross
   * mounts. (Upstream lifts and places them again around every chown and revert: eight mount
   * calls, measured as the largest part of a revert on tmpfs, for no change the walk can see.)
   */
  const shiftClone = (
    rec: CloneRecord,
    uidOffset: number,
    gidOffset: number,
    finishing: boolean,
  ): Promise<void> => runShift(rec.mergedDir, uidOffset, gidOffset, finishing);

  const createClone = async (id: string, requestedRootfs: string): Promise<CreateReply> => {
    const { cloneDir, ...dirs } = cloneDirsOf(deps.dataRoot, id);
    const origRootfs = await realpath(requestedRootfs).catch(() => {
      throw new SysboxError('invalid-request', `rootfs ${requestedRootfs} does not exist`);
    });
    // The same create again (its answer was lost to a NATS reconnect, so the caller re-sent it) is
    // answered as the first was; the keyed lock has let the first finish.
    const existing = (await deps.clones.get(id))?.value;
    if (existing) {
      if (existing.origRootfs !== origRootfs || existing.pending !== undefined) {
        throw new SysboxError(
          'already-exists',
          `container ${id} already has a rootfs clone (of ${existing.origRootfs})`,
        );
      }
      const rec = checkRecord(id, existing);
      return { rootfs: rec.mergedDir, origWorkDir: rec.origWorkDir };
    }
    const orig = topMountAt(await deps.readMounts(), origRootfs);
    if (!orig)
      throw new SysboxError(
        'unsupported',
        `rootfs cloning needs an overlayfs mount; ${requestedRootfs} is not a mount point`,
      );
    const plan = planClone(orig, dirs, deps.pageSize);
    // We bind over the rootfs and its upper and work dirs and mount its layers: all must be a runtime's.
    await deps.guard.allowedRootfs(origRootfs, `rootfs of ${id}`);
    for (const [path, what] of [
      [plan.origUpperDir, 'upper dir'],
      [plan.origWorkDir, 'work dir'],
      ...plan.lowerDirs.map((d) => [d, 'lower dir']),
    ] as const) {
      await deps.guard.allowedRootfs(path, `overlay ${what} of the rootfs of ${id}`);
    }
    const rec: CloneRecord = {
      id,
      origRootfs,
      cloneDir,
      ...dirs,
      origUpperDir: plan.origUpperDir,
      origWorkDir: plan.origWorkDir,
      lowerDirs: plan.lowerDirs,
      mountOptions: plan.mountOptions,
      cwd: plan.cwd,
      propagation: plan.propagation,
      uidOffset: 0,
      gidOffset: 0,
      chowned: false,
      bindToSelfActive: true,
      pending: 'create',
      boot: bootId,
      createdAt: now().toISOString(),
    };
    await deps.clones.create(id, rec);
    try {
      const mode = (await stat(dirname(origRootfs))).mode & 0o7777;
      await mkdir(cloneDir, { recursive: true, mode });
      for (const d of Object.values(dirs)) await mkdir(d, { recursive: true, mode: 0o755 });
      await mountOverlay(rec);
      await placeBinds(rec);
    } catch (err) {
      await teardown(rec).catch((e: unknown) => log.error({ err: e, id }, 'unwinding a failed clone'));
      await deps.clones.delete(id);
      throw SysboxError.from(err);
    }
    await update(id, { pending: undefined });
    log.info({ id, origRootfs, layers: plan.lowerDirs.length, cwd: plan.cwd }, 'rootfs cloned');
    return { rootfs: dirs.mergedDir, origWorkDir: plan.origWorkDir };
  };

  const removeClone = async (id: string): Promise<void> => {
    const rec = await mustGet(id);
    await checkRecordedRuntimeDirs(rec);
    await teardown(rec);
    // The runtime may be unable to remove its rootfs dir while our mounts sat on it; the container
    // is gone by now, so clear whatever is left there. Best effort, as upstream.
    if (await exists(rec.origRootfs)) {
      await mounter.unmount(rec.origRootfs, { lazy: true }).catch(() => undefined);
      await rmdir(rec.origRootfs).catch(() => undefined);
    }
    await deps.clones.delete(id);
  };

  /** A chown or revert of this clone was cut short: its entries lie on both sides of the recorded offset. */
  const halfShifted = (rec: CloneRecord): boolean => rec.pending === 'chown' || rec.pending === 'revert';

  /**
   * Also the retry of a chown (or a chown after a revert) that a killed daemon left half done: with
   * the recorded offsets, only the entries not yet shifted move.
   */
  const chownClone = async (id: string, uidOffset: number, gidOffset: number): Promise<void> => {
    const rec = await mustGet(id);
    const finishing = halfShifted(rec);
    if (rec.pending === 'create')
      throw new SysboxError('failed-precondition', `clone of ${id} has an unfinished create`);
    if (finishing && (uidOffset !== rec.uidOffset || gidOffset !== rec.gidOffset)) {
      throw new SysboxError(
        'failed-precondition',
        `clone of ${id} has an unfinished ${rec.pending} by ${rec.uidOffset}:${rec.gidOffset}; chown it by those offsets or revert it`,
      );
    }
    // The same chown again (an answer lost to a reconnect) has nothing left to do.
    if (rec.chowned && !finishing && uidOffset === rec.uidOffset && gidOffset === rec.gidOffset) return;
    if (rec.chowned && !finishing) {
      throw new SysboxError(
        'failed-precondition',
        `clone of ${id} is already chowned by ${rec.uidOffset}:${rec.gidOffset}; revert it first`,
      );
    }
    await checkOffsets(uidOffset, gidOffset, `chown of clone ${id}`);
    await checkRecordedRuntimeDirs(rec);
    await update(id, { pending: 'chown', uidOffset, gidOffset });
    await shiftClone(rec, uidOffset, gidOffset, finishing);
    await update(id, { pending: undefined, chowned: true });
  };

  /** Also undoes a chown that a killed daemon left half done, and finishes a half-done revert. */
  const revertChown = async (id: string): Promise<void> => {
    const rec = await mustGet(id);
    const finishing = halfShifted(rec);
    if (!rec.chowned && !finishing) return;
    // The inverse of a shift we recorded, and only of one that a request could have made.
    await checkOffsets(rec.uidOffset, rec.gidOffset, `recorded chown of clone ${id}`);
    await checkRecordedRuntimeDirs(rec);
    await update(id, { pending: 'revert' });
    await shiftClone(rec, -rec.uidOffset, -rec.gidOffset, finishing);
    await update(id, { pending: undefined, chowned: false });
  };

  const uppers = createUpperShifts({ uppers: deps.uppers, guard: deps.guard, runShift, checkOffsets });
  const reconcile = createReconciler({
    clones: deps.clones,
    uppers: deps.uppers,
    readMounts: deps.readMounts,
    log,
    bootId,
    serialized,
    mounts,
    finishUpper: uppers.finishUpper,
    checkRecord,
    checkRecordedRuntimeDirs,
    update,
    chownClone,
    revertChown,
  });

  return {
    createClone: (id, origRootfs) => serialized(id, () => createClone(id, origRootfs)),
    removeClone: (id) => serialized(id, () => removeClone(id)),
    chownClone: (id, uidOffset, gidOffset) => serialized(id, () => chownClone(id, uidOffset, gidOffset)),
    revertChown: (id) => serialized(id, () => revertChown(id)),
    containerStopped: (id) =>
      serialized(id, async () => {
        await mustGet(id);
        // The runtime unmounted the rootfs on stop, which took our bind-to-self (on purpose).
        await update(id, { bindToSelfActive: false });
      }),

    async removeAll(): Promise<RemoveAllReply> {
      const out: RemoveAllReply = { removed: [], failures: [] };
      for (const { value } of await deps.clones.list()) {
        try {
          await serialized(value.id, () => removeClone(value.id));
          out.removed.push(value.id);
        } catch (err) {
          log.warn({ err, id: value.id }, 'remove-all: clone not removed');
          out.failures.push({ id: value.id, error: (err as Error).message });
        }
      }
      return out;
    },

    shiftUpper: (id, upperDir, uidOffset, gidOffset, alreadyShifted = false) =>
      serialized(`upper:${id}`, () => uppers.shiftUpper(id, upperDir, uidOffset, gidOffset, alreadyShifted)),
    revertUpper: (id) => serialized(`upper:${id}`, () => uppers.revertUpper(id)),

    async list() {
      const mounts = await deps.readMounts();
      const clones = (await deps.clones.list()).map(({ value: r }) => ({
        id: r.id,
        origRootfs: r.origRootfs,
        cloneRootfs: r.mergedDir,
        origWorkDir: r.origWorkDir,
        uidOffset: r.uidOffset,
        gidOffset: r.gidOffset,
        chowned: r.chowned,
        containerStopped: !r.bindToSelfActive,
        mounted: isOverlayMounted(mounts, r.mergedDir),
        createdAt: r.createdAt,
      }));
      const uppers = (await deps.uppers.list()).map(({ value: u }) => ({
        id: u.id,
        upperDir: u.upperDir,
        uidOffset: u.uidOffset,
        gidOffset: u.gidOffset,
        shifted: u.shifted,
      }));
      return { clones, uppers };
    },

    async summary() {
      const [clones, uppers] = await Promise.all([deps.clones.keys(), deps.uppers.keys()]);
      return { clones: clones.length, uppers: uppers.length };
    },

    reconcile,
  };
}
