/**
 * Rootfs clones (upstream rootfsCloner): a metacopy overlay over the original rootfs' lower layers,
 * bind-mounted over the original rootfs, upper and work dirs, so a chown of the clone copies
 * metadata only. Every clone and upper-dir shift is recorded in KV before the host is touched,
 * so a restarted daemon finds and re-establishes them. A clone of an earlier boot is not brought
 * back: its mounts went with the reboot, its container no longer runs, and its binds over the
 * runtime's upper and work dirs would keep the runtime from mounting the rootfs again; it is
 * removed at start (cloneAtStart), and a restarted container gets a new clone.
 */
import { access, mkdir, realpath, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import {
  SysboxError,
  type CloneInfo,
  type RootfsCloner,
  type UpperShiftInfo,
  type rootfsCreateClone,
  type rootfsRemoveAll,
} from '@sysbox-mgr-ts/contracts';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { containerIds, unfinishedIds, type ShiftOnly } from '@sysbox-mgr-ts/id-shift';
import { REMOVE, bootOf, readBootId, type StateStore } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, mountsUnder, overlayOptions, topMountAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import { createKeyedLock, type Logger } from '@sysbox-mgr-ts/service-kit';
import type { Mounter } from './mounter.js';
import { planClone } from './overlay-plan.js';

export const CLONER_DIR = 'rootfs';

export const CloneRecord = z.object({
  id: z.string(),
  origRootfs: z.string(),
  cloneDir: z.string(),
  mergedDir: z.string(),
  diffDir: z.string(),
  workDir: z.string(),
  origUpperDir: z.string(),
  origWorkDir: z.string(),
  lowerDirs: z.array(z.string()),
  mountOptions: z.string(),
  cwd: z.string().optional(),
  propagation: z.enum(['shared', 'slave', 'private', 'unbindable']),
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  chowned: z.boolean(),
  bindToSelfActive: z.boolean(),
  /**
   * An operation that started and has not finished: a daemon killed mid-way left it. A pending
   * chown or revert means the clone's entries lie partly at their original owners and partly at
   * original + offset; the next chown-clone or revert-chown (or the next start) finishes it.
   */
  pending: z.enum(['create', 'chown', 'revert']).optional(),
  /** The kernel boot id of the boot that mounted it (none from older versions: taken for this boot). */
  boot: z.string().optional(),
  createdAt: z.string(),
});
export type CloneRecord = z.infer<typeof CloneRecord>;

export const UpperRecord = z.object({
  id: z.string(),
  upperDir: z.string(),
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  shifted: z.boolean(),
  /** As a clone's pending chown/revert: the dir is partly shifted until a retry or the next start finishes it. */
  pending: z.enum(['shift', 'revert']).optional(),
});
export type UpperRecord = z.infer<typeof UpperRecord>;

/** The shared ID-shift walk (@sysbox-mgr-ts/id-shift `shift`), injected so tests can observe it. */
export type ShiftIds = (
  root: string,
  uidOffset: number,
  gidOffset: number,
  opts: { signal?: AbortSignal; logger?: Logger; crossMounts?: boolean; only?: ShiftOnly },
) => Promise<{ entries: number; scanned?: number; ms: number }>;

export interface ClonerDeps {
  dataRoot: string;
  clones: StateStore<CloneRecord>;
  uppers: StateStore<UpperRecord>;
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

/**
 * What start-up does with a clone record: a clone of an earlier boot is removed (its mounts are
 * gone and its container no longer runs; its dirs are deleted), an unstamped one (an older
 * version's) is stamped with this boot and reconciled, a clone of this boot is reconciled
 * (adopted, or re-established when its mounts were lifted without a reboot).
 */
export function cloneAtStart(
  rec: Pick<CloneRecord, 'boot'>,
  bootId: string,
): 'remove' | 'stamp' | 'reconcile' {
  const of = bootOf(rec.boot, bootId);
  return of === 'earlier-boot' ? 'remove' : of === 'unstamped' ? 'stamp' : 'reconcile';
}

export interface ReconcileReport {
  adopted: string[];
  reestablished: string[];
  /** Records removed: the clone could not (or need not) be brought back. */
  dropped: { id: string; reason: string }[];
  /** Records kept: bringing the clone back failed and may succeed on a later start. */
  failed: { id: string; reason: string }[];
  /** Shifts a killed daemon had left half done, finished (a clone's chown or revert, an upper dir's shift or revert). */
  finished: { id: string; operation: 'chown' | 'revert' | 'shift-upper' | 'revert-upper' }[];
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

  /** Where a container's clone lives: derived from the id alone, never read from a record. */
  const cloneDirsOf = (id: string) => {
    const cloneDir = join(deps.dataRoot, CLONER_DIR, id);
    if (dirname(cloneDir) !== join(deps.dataRoot, CLONER_DIR))
      throw new SysboxError('invalid-request', `container id ${id} is not a single path token`);
    return {
      cloneDir,
      mergedDir: join(cloneDir, 'overlay2', 'merged'),
      diffDir: join(cloneDir, 'overlay2', 'diff'),
      workDir: join(cloneDir, 'overlay2', 'work'),
    };
  };

  /**
   * KV can be written by others: a record is used only when its clone dirs (and the upper and
   * work dirs its mount options name) are the derived ones, so a forged record cannot make us
   * rm -rf, unmount or mount over a path of its choosing.
   */
  const checkRecord = (id: string, rec: CloneRecord): CloneRecord => {
    const want = { id, ...cloneDirsOf(id) };
    const opts = overlayOptions(rec.mountOptions.split(/(?<!\\),/));
    const unescaped = (v: string | undefined) => v?.replace(/\\(.)/g, '$1');
    const got = {
      id: rec.id,
      cloneDir: rec.cloneDir,
      mergedDir: rec.mergedDir,
      diffDir: rec.diffDir,
      workDir: rec.workDir,
    };
    const bad = Object.entries(want).filter(([k, v]) => got[k as keyof typeof got] !== v);
    if (unescaped(opts.upperDir) !== want.diffDir) bad.push(['upperdir', want.diffDir]);
    if (unescaped(opts.workDir) !== want.workDir) bad.push(['workdir', want.workDir]);
    if (bad.length > 0) {
      log.error(
        { id, record: rec, mismatched: bad.map(([k]) => k) },
        'clone record does not match the dirs derived from its id: refused',
      );
      throw new SysboxError(
        'internal',
        `record of clone ${id} names foreign paths (${bad.map(([k, v]) => `${k} should be ${v}`).join(', ')}): refusing to use it`,
      );
    }
    return rec;
  };

  /** The runtime's dirs a record names (we bind over them, unmount them, mount its layers): allowed roots only. */
  const checkRecordedRuntimeDirs = async (rec: CloneRecord): Promise<void> => {
    const named = [
      [rec.origRootfs, 'rootfs'],
      [rec.origUpperDir, 'upper dir'],
      [rec.origWorkDir, 'work dir'],
      ...rec.lowerDirs.map((d) => [d, 'lower dir'] as const),
    ] as const;
    for (const [path, what] of named) {
      if (await exists(path)) await deps.guard.allowedRootfs(path, `recorded ${what} of clone ${rec.id}`);
    }
  };

  /** Positive offsets into a delegated range; undoing one is revert-chown's job, from the record. */
  const checkOffsets = async (uidOffset: number, gidOffset: number, what: string): Promise<void> => {
    if (uidOffset < 0 || gidOffset < 0) {
      throw new SysboxError(
        'invalid-request',
        `${what}: negative offset ${uidOffset}:${gidOffset} is refused; only a revert undoes a recorded shift`,
      );
    }
    await deps.guard.idsDelegated({ uid: uidOffset, gid: gidOffset }, what);
  };

  const mustGet = async (id: string): Promise<CloneRecord> => {
    const rec = await deps.clones.get(id);
    if (!rec) throw new SysboxError('not-found', `no rootfs clone for container ${id}`);
    return checkRecord(id, rec.value);
  };

  const update = (id: string, patch: Partial<CloneRecord>) =>
    deps.clones.mutate(id, (cur) => (cur ? { ...cur, ...patch } : undefined));

  const isOverlayMounted = (mounts: readonly MountEntry[], dir: string): boolean =>
    mountsAt(mounts, dir).some((m) => m.fsType === 'overlay');

  /** The clone's overlay device, to tell our mounts on the original rootfs from the runtime's. */
  const cloneDevice = (mounts: readonly MountEntry[], rec: CloneRecord): string | undefined =>
    topMountAt(mounts, rec.mergedDir)?.majorMinor;

  /** True when `path` shows the root of `source`: our bind mount is on top there. */
  const showsDir = async (path: string, source: string): Promise<boolean> => {
    try {
      const [a, b] = await Promise.all([stat(path), stat(source)]);
      return a.dev === b.dev && a.ino === b.ino;
    } catch {
      return false;
    }
  };

  /** Unmounts our binds over the original dirs, only while ours are the topmost mounts there. */
  const liftBinds = async (rec: CloneRecord): Promise<void> => {
    for (const [target, source] of [
      [rec.origRootfs, rec.mergedDir],
      [rec.origUpperDir, rec.diffDir],
      [rec.origWorkDir, rec.workDir],
    ] as const) {
      // Bounded: the bind plus the bind-to-self is two; more means someone stacked copies.
      for (let i = 0; i < 8 && (await showsDir(target, source)); i++)
        await mounter.unmount(target, { lazy: true });
    }
  };

  /** Binds merged, diff and work over the original dirs (and the bind-to-self); all or nothing. */
  const placeBinds = async (rec: CloneRecord): Promise<void> => {
    const mounts = await deps.readMounts();
    const dev = cloneDevice(mounts, rec);
    const ours = mountsAt(mounts, rec.origRootfs).filter((m) => m.majorMinor === dev).length;
    const steps: [string, string, boolean][] = [
      [rec.mergedDir, rec.origRootfs, ours === 0],
      [rec.diffDir, rec.origUpperDir, !(await showsDir(rec.origUpperDir, rec.diffDir))],
      [rec.workDir, rec.origWorkDir, !(await showsDir(rec.origWorkDir, rec.workDir))],
      [rec.origRootfs, rec.origRootfs, rec.bindToSelfActive && ours < 2],
    ];
    const done: string[] = [];
    try {
      for (const [source, target, needed] of steps) {
        if (!needed) continue;
        await mounter.rbind(source, target);
        done.push(target);
      }
    } catch (err) {
      for (const target of done.reverse())
        await mounter.unmount(target, { lazy: true }).catch(() => undefined);
      throw err;
    }
  };

  const mountOverlay = async (rec: CloneRecord): Promise<void> => {
    await mounter.overlay(rec.mergedDir, rec.mountOptions, rec.cwd);
    try {
      await mounter.setPropagation(rec.mergedDir, rec.propagation);
    } catch (err) {
      await mounter.unmount(rec.mergedDir, { lazy: true }).catch(() => undefined);
      throw err;
    }
  };

  /** Takes down everything the clone mounted; safe to call on a half-made clone. */
  const teardown = async (rec: CloneRecord): Promise<void> => {
    await liftBinds(rec);
    for (const m of mountsUnder(await deps.readMounts(), rec.cloneDir))
      await mounter.unmount(m.mountPoint, { lazy: true });
    const left = mountsUnder(await deps.readMounts(), rec.cloneDir);
    if (left.length > 0) {
      // Never rm -rf through a live overlay: it would write whiteouts, or worse, delete lower files.
      throw new SysboxError('internal', `clone ${rec.id}: ${left[0]!.mountPoint} is still mounted`);
    }
    await rm(rec.cloneDir, { recursive: true, force: true });
  };

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

  /**
   * `finishing`: the dir is partly shifted by an earlier walk that was cut short, so only the ids
   * still on the source side move (id-shift's unfinishedIds), which also makes a retry harmless.
   */
  const runShift = async (
    root: string,
    uidOffset: number,
    gidOffset: number,
    finishing: boolean,
  ): Promise<void> => {
    const signal = AbortSignal.timeout(deps.shiftTimeoutMs);
    // A revert moves only the container's ids back: a file the host or the runtime made there as
    // a host user meanwhile stays as it is (it used to make the whole revert refuse).
    const revert = uidOffset < 0 && gidOffset < 0;
    const only = revert
      ? { only: containerIds(-uidOffset, -gidOffset) }
      : finishing
        ? { only: unfinishedIds(uidOffset, gidOffset) }
        : {};
    try {
      const r = await deps.shiftIds(root, uidOffset, gidOffset, {
        signal,
        logger: log,
        crossMounts: false,
        ...only,
      });
      const left = revert ? (r.scanned ?? r.entries) - r.entries : 0;
      if (finishing)
        log.info(
          { root, uidOffset, gidOffset, entries: r.entries, ms: r.ms },
          'finished an interrupted id shift',
        );
      else
        log.info(
          {
            root,
            uidOffset,
            gidOffset,
            entries: r.entries,
            ms: Math.round(r.ms),
            ...(left > 0 ? { leftAsTheyWere: left } : {}),
          },
          'shifted ids',
        );
    } catch (err) {
      if (signal.aborted) {
        throw new SysboxError('timeout', `shifting ${root} took over ${deps.shiftTimeoutMs} ms`, {
          cause: err,
        });
      }
      throw SysboxError.from(err);
    }
  };

  const createClone = async (id: string, requestedRootfs: string): Promise<CreateReply> => {
    const { cloneDir, ...dirs } = cloneDirsOf(id);
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

  const shiftUpper = async (
    id: string,
    requestedDir: string,
    uidOffset: number,
    gidOffset: number,
    alreadyShifted: boolean,
  ): Promise<void> => {
    const cur = (await deps.uppers.get(id))?.value;
    if (!(await exists(requestedDir)))
      throw new SysboxError('invalid-request', `upper dir ${requestedDir} does not exist`);
    await checkOffsets(uidOffset, gidOffset, `shift of the upper dir of ${id}`);
    const upperDir = await deps.guard.allowedRootfs(requestedDir, `upper dir of ${id}`);
    // A shift or revert cut short is finished by a retry with the same dir and offsets; the
    // filtered walk moves only what is left, whether or not the runtime chowned the dir meanwhile.
    const finishing = cur?.pending !== undefined;
    const sameShift =
      cur?.upperDir === upperDir && cur.uidOffset === uidOffset && cur.gidOffset === gidOffset;
    // The same shift again (an answer lost to a reconnect) has nothing left to do.
    if (cur?.shifted && sameShift) return;
    if (cur?.shifted || (finishing && !sameShift)) {
      throw new SysboxError(
        'already-exists',
        `upper dir of ${id} is already shifted (${cur.upperDir}${finishing ? `, ${cur.pending} unfinished` : ''})`,
      );
    }
    if (alreadyShifted && !finishing) {
      await deps.uppers.mutate(id, () => ({ id, upperDir, uidOffset, gidOffset, shifted: true }));
      return;
    }
    await deps.uppers.mutate(id, () => ({
      id,
      upperDir,
      uidOffset,
      gidOffset,
      shifted: false,
      pending: 'shift',
    }));
    await runShift(upperDir, uidOffset, gidOffset, finishing);
    await deps.uppers.mutate(id, (c) => (c ? { ...c, shifted: true, pending: undefined } : undefined));
  };

  const revertUpper = async (id: string): Promise<void> => {
    const cur = (await deps.uppers.get(id))?.value;
    if (!cur) return;
    const finishing = cur.pending !== undefined;
    if (cur.shifted || finishing) {
      // The inverse of a shift we recorded, and only of one that a request could have made.
      await checkOffsets(cur.uidOffset, cur.gidOffset, `recorded shift of the upper dir of ${id}`);
      const present = await exists(cur.upperDir);
      if (present) await deps.guard.allowedRootfs(cur.upperDir, `recorded upper dir of ${id}`);
      await deps.uppers.mutate(id, (c) => (c ? { ...c, pending: 'revert' } : undefined));
      if (present) await runShift(cur.upperDir, -cur.uidOffset, -cur.gidOffset, finishing);
    }
    await deps.uppers.mutate(id, () => REMOVE);
  };

  /**
   * At start: what a killed daemon left half shifted is finished in the direction it was going. An
   * upper dir that is gone (its container was removed meanwhile) has nothing left to shift: the
   * revert path then only drops the record.
   */
  const finishUpper = async (rec: UpperRecord): Promise<'shift-upper' | 'revert-upper'> => {
    if (rec.pending === 'shift' && (await exists(rec.upperDir))) {
      await shiftUpper(rec.id, rec.upperDir, rec.uidOffset, rec.gidOffset, false);
      return 'shift-upper';
    }
    await revertUpper(rec.id);
    return 'revert-upper';
  };

  /** Brings one clone back (mounts, binds), then finishes a chown or revert that a kill cut short. */
  const reconcileOne = async (
    rec: CloneRecord,
  ): Promise<
    | { outcome: 'adopted' | 'reestablished'; finished?: 'chown' | 'revert' }
    | { outcome: 'dropped'; reason: string }
  > => {
    checkRecord(rec.id, rec);
    await checkRecordedRuntimeDirs(rec);
    if (rec.pending === 'create') {
      await teardown(rec);
      await deps.clones.delete(rec.id);
      return { outcome: 'dropped', reason: 'the daemon stopped while creating it; unwound' };
    }
    const atStart = cloneAtStart(rec, bootId);
    if (atStart === 'remove') {
      // Nothing of it is mounted after a reboot; teardown lifts only what is ours, if anything.
      await teardown(rec);
      await deps.clones.delete(rec.id);
      return {
        outcome: 'dropped',
        reason: `a clone of an earlier boot (${rec.boot}): its mounts went with the reboot; its dir is removed`,
      };
    }
    if (atStart === 'stamp') await update(rec.id, { boot: bootId });
    if (!(await exists(rec.origRootfs)) || !(await exists(rec.origWorkDir))) {
      await teardown(rec);
      await deps.clones.delete(rec.id);
      return {
        outcome: 'dropped',
        reason: 'the container was removed while the daemon was down; clone removed',
      };
    }
    let mounts = await deps.readMounts();
    let remounted = false;
    if (!isOverlayMounted(mounts, rec.mergedDir)) {
      const missing = [];
      for (const d of [...rec.lowerDirs, rec.diffDir, rec.workDir, rec.mergedDir])
        if (!(await exists(d))) missing.push(d);
      if (missing.length > 0) {
        await liftBinds(rec);
        await deps.clones.delete(rec.id);
        return {
          outcome: 'dropped',
          reason: `cannot mount it again: missing ${missing.join(', ')}; its dir ${rec.cloneDir} is left as it is`,
        };
      }
      await mountOverlay(rec);
      remounted = true;
      mounts = await deps.readMounts();
    }
    const dev = cloneDevice(mounts, rec);
    const binds = mountsAt(mounts, rec.origRootfs).filter((m) => m.majorMinor === dev).length;
    const complete =
      binds >= (rec.bindToSelfActive ? 2 : 1) &&
      (await showsDir(rec.origUpperDir, rec.diffDir)) &&
      (await showsDir(rec.origWorkDir, rec.workDir));
    if (!complete) {
      await placeBinds(rec);
      remounted = true;
    }
    const outcome = remounted ? 'reestablished' : 'adopted';
    if (rec.pending === 'chown') await chownClone(rec.id, rec.uidOffset, rec.gidOffset);
    else if (rec.pending === 'revert') await revertChown(rec.id);
    else return { outcome };
    return { outcome, finished: rec.pending };
  };

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
      serialized(`upper:${id}`, () => shiftUpper(id, upperDir, uidOffset, gidOffset, alreadyShifted)),
    revertUpper: (id) => serialized(`upper:${id}`, () => revertUpper(id)),

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

    async reconcile() {
      const report: ReconcileReport = {
        adopted: [],
        reestablished: [],
        dropped: [],
        failed: [],
        finished: [],
      };
      for (const { value: rec } of await deps.clones.list()) {
        try {
          const r = await serialized(rec.id, () => reconcileOne(rec));
          if (r.outcome === 'dropped') {
            report.dropped.push({ id: rec.id, reason: r.reason });
            log.warn({ id: rec.id, reason: r.reason }, 'clone dropped at start');
          } else {
            report[r.outcome].push(rec.id);
            if (r.finished) {
              report.finished.push({ id: rec.id, operation: r.finished });
              log.warn(
                { id: rec.id, operation: r.finished, uidOffset: rec.uidOffset, gidOffset: rec.gidOffset },
                'finished a clone chown the daemon was killed in',
              );
            }
          }
        } catch (err) {
          report.failed.push({ id: rec.id, reason: (err as Error).message });
          log.error(
            { err, id: rec.id, pending: rec.pending },
            'clone could not be re-established; its record is kept',
          );
        }
      }
      for (const { value: rec } of await deps.uppers.list()) {
        if (!rec.pending) continue;
        try {
          const operation = await serialized(`upper:${rec.id}`, () => finishUpper(rec));
          report.finished.push({ id: rec.id, operation });
          log.warn(
            {
              id: rec.id,
              operation,
              upperDir: rec.upperDir,
              uidOffset: rec.uidOffset,
              gidOffset: rec.gidOffset,
            },
            'finished an upper-dir shift the daemon was killed in',
          );
        } catch (err) {
          report.failed.push({ id: rec.id, reason: `upper dir ${rec.upperDir}: ${(err as Error).message}` });
          log.error(
            { err, id: rec.id, pending: rec.pending },
            'could not finish an interrupted upper-dir shift; its record is kept',
          );
        }
      }
      return report;
    },
  };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
