/**
 * The start-up pass over the records: every clone is adopted, re-established or dropped (a clone
 * of an earlier boot, or of a container removed meanwhile), and every clone chown or upper-dir
 * shift a killed daemon left half done is finished.
 */
import type { StateStore } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import type { KeyedLock, Logger } from '@sysbox-mgr-ts/service-kit';
import { cloneDevice, isOverlayMounted, showsDir, type CloneMounts } from './clone-mounts.js';
import { exists } from './fs.js';
import { cloneAtStart, type CloneRecord, type UpperRecord } from './records.js';
import type { UpperShifts } from './uppers.js';

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

/** What the pass needs of the cloner. */
export interface ReconcileContext {
  clones: StateStore<CloneRecord>;
  uppers: StateStore<UpperRecord>;
  readMounts: () => Promise<MountEntry[]>;
  log: Logger;
  bootId: string;
  serialized: KeyedLock;
  mounts: CloneMounts;
  finishUpper: UpperShifts['finishUpper'];
  checkRecord(id: string, rec: CloneRecord): CloneRecord;
  checkRecordedRuntimeDirs(rec: CloneRecord): Promise<void>;
  update(id: string, patch: Partial<CloneRecord>): Promise<unknown>;
  chownClone(id: string, uidOffset: number, gidOffset: number): Promise<void>;
  revertChown(id: string): Promise<void>;
}

export function createReconciler(ctx: ReconcileContext): () => Promise<ReconcileReport> {
  const { log, bootId, serialized, finishUpper, checkRecord, checkRecordedRuntimeDirs, update } = ctx;
  const { teardown, liftBinds, mountOverlay, placeBinds } = ctx.mounts;
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
      await ctx.clones.delete(rec.id);
      return { outcome: 'dropped', reason: 'the daemon stopped while creating it; unwound' };
    }
    const atStart = cloneAtStart(rec, bootId);
    if (atStart === 'remove') {
      // Nothing of it is mounted after a reboot; teardown lifts only what is ours, if anything.
      await teardown(rec);
      await ctx.clones.delete(rec.id);
      return {
        outcome: 'dropped',
        reason: `a clone of an earlier boot (${rec.boot}): its mounts went with the reboot; its dir is removed`,
      };
    }
    if (atStart === 'stamp') await update(rec.id, { boot: bootId });
    if (!(await exists(rec.origRootfs)) || !(await exists(rec.origWorkDir))) {
      await teardown(rec);
      await ctx.clones.delete(rec.id);
      return {
        outcome: 'dropped',
        reason: 'the container was removed while the daemon was down; clone removed',
      };
    }
    let mounts = await ctx.readMounts();
    let remounted = false;
    if (!isOverlayMounted(mounts, rec.mergedDir)) {
      const missing = [];
      for (const d of [...rec.lowerDirs, rec.diffDir, rec.workDir, rec.mergedDir])
        if (!(await exists(d))) missing.push(d);
      if (missing.length > 0) {
        await liftBinds(rec);
        await ctx.clones.delete(rec.id);
        return {
          outcome: 'dropped',
          reason: `cannot mount it again: missing ${missing.join(', ')}; its dir ${rec.cloneDir} is left as it is`,
        };
      }
      await mountOverlay(rec);
      remounted = true;
      mounts = await ctx.readMounts();
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
    if (rec.pending === 'chown') await ctx.chownClone(rec.id, rec.uidOffset, rec.gidOffset);
    else if (rec.pending === 'revert') await ctx.revertChown(rec.id);
    else return { outcome };
    return { outcome, finished: rec.pending };
  };

  const reconcile = async (): Promise<ReconcileReport> => {
    const report: ReconcileReport = {
      adopted: [],
      reestablished: [],
      dropped: [],
      failed: [],
      finished: [],
    };
    for (const { value: rec } of await ctx.clones.list()) {
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
    for (const { value: rec } of await ctx.uppers.list()) {
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
  };
  return reconcile;
}
