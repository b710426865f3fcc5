/**
 * Mount-source preparation (upstream mgr.prepMounts and its revert): a bind-mount source whose
 * owner is not the container's root is shifted by the offset, once, and shifted back when the
 * last container holding it lets go. Each source has one KV record, so a restart forgets nothing
 * and two containers never shift the same tree twice. The record says when a shift (or the shift
 * back) is under way, so a walk cut short by a kill is finished by the next start or request.
 */
import { stat } from 'node:fs/promises';
import { PrepInfo, SysboxError, type VolPrepRequest } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { containerIds, type ShiftOnly } from '@sysbox-mgr-ts/id-shift';
import { createKeyedLock } from '@sysbox-mgr-ts/service-kit';
import type { Logger } from 'pino';
import { z } from 'zod';
import { pendingWalks, prepKey } from './prep-records.js';

export { prepKey } from './prep-records.js';

/**
 * What list shows (PrepInfo) plus, while a walk is under way, which: 'shift' (holders: the
 * container that asked) or 'revert' (no holders left; the record stays until the source is back).
 * The marker is ours alone, so it lives here and not in the contract.
 */
export const PrepRecordSchema = PrepInfo.extend({ pending: z.enum(['shift', 'revert']).optional() });
export type PrepRecord = z.infer<typeof PrepRecordSchema>;

/** The id-shift package's operations this module uses. */
export interface IdShifter {
  shift(
    root: string,
    uidOffset: number,
    gidOffset: number,
    opts?: { logger?: Logger; signal?: AbortSignal; only?: ShiftOnly },
  ): Promise<{ entries: number; scanned?: number; ms: number }>;
  needsShift(source: string, uid: number, gid: number): Promise<boolean>;
}

export interface PrepDeps {
  store: KvStateStore<PrepRecord>;
  shifter: IdShifter;
  /** System dirs, the data root and its parents are never sources; prep ids must be subordinate. */
  guard: HostGuard;
  log: Logger;
}

export interface PrepReconcileReport {
  /** Sources whose shift or shift back a killed daemon had left half done, now finished. */
  finished: { source: string; operation: 'shift' | 'revert' }[];
  /** Sources left as they are (the record kept): finishing failed or cannot be done safely. */
  failed: { source: string; reason: string }[];
}

export interface MountPrep {
  prep(req: VolPrepRequest, log?: Logger): Promise<{ prepared: string[]; skipped: string[] }>;
  revertPrep(id: string, log?: Logger): Promise<{ reverted: string[] }>;
  list(): Promise<PrepRecord[]>;
  /** How many sources are prepared: the store's keys, one request, no record read. */
  count(): Promise<number>;
  /** At start: finishes every shift and shift back that a killed daemon left half done. */
  reconcile(): Promise<PrepReconcileReport>;
}

export function createMountPrep(deps: PrepDeps): MountPrep {
  const locked = createKeyedLock();

  const resolveSource = (source: string): Promise<string> => deps.guard.notSystemDir(source, 'mount source');
  const { checkRecordedSource, finishPending } = pendingWalks({ ...deps, resolveSource });

  const prepOne = async (
    id: string,
    uid: number,
    gid: number,
    source: string,
    exclusive: boolean,
    log: Logger,
  ): Promise<boolean> =>
    locked(source, async () => {
      const key = prepKey(source);
      const found = await deps.store.get(key);
      // A request that meets a walk cut short (the daemon was killed before start-up could finish
      // it) finishes it first: forward for the container holding it, or back and forgotten.
      const held = found?.value.pending ? await finishPending(key, found.value, log) : found?.value;
      if (held) {
        // The same prep again (its answer lost to a reconnect) answers as the first did.
        if (held.holders.includes(id))
          return held.id === id && (held.uidOffset !== 0 || held.gidOffset !== 0);
        const others = held.holders.join(', ');
        if (exclusive || held.exclusive) {
          log.warn(
            { source, container: id, holders: held.holders },
            `exclusive mount source ${source} of ${id} is already in use by ${others}: not shifted again`,
          );
        }
        if (await deps.shifter.needsShift(source, uid, gid)) {
          log.warn(
            { source, container: id, holders: held.holders },
            `mount source ${source} is owned for ${others}, not for ${id}: left as is`,
          );
        }
        await deps.store.mutate(key, (cur) =>
          cur
            ? { ...cur, exclusive: cur.exclusive || exclusive, holders: [...new Set([...cur.holders, id])] }
            : undefined,
        );
        return false;
      }
      const st = await stat(source);
      const needs = await deps.shifter.needsShift(source, uid, gid);
      const record: PrepRecord = {
        id,
        source,
        exclusive,
        uidOffset: needs ? uid - st.uid : 0,
        gidOffset: needs ? gid - st.gid : 0,
        holders: [id],
        ...(needs ? { pending: 'shift' as const } : {}),
      };
      // The record goes first: a crash mid-shift leaves it behind, saying a shift is under way, so
      // the next start (or revert-prep) knows what to finish or undo.
      await deps.store.create(key, record);
      if (!needs) return false;
      try {
        const r = await deps.shifter.shift(source, record.uidOffset, record.gidOffset, { logger: log });
        log.info(
          { source, container: id, uidOffset: record.uidOffset, gidOffset: record.gidOffset, ...r },
          'mount source shifted',
        );
      } catch (err) {
        await undoFailedShift(key, record, err, log);
        throw err;
      }
      await deps.store.mutate(key, (cur) => (cur ? { ...cur, pending: undefined } : undefined));
      return true;
    });

  /**
   * id-shift changes nothing when it refuses a request or the source is missing; any other failure
   * may come part way through the walk, so what moved is moved back. If that fails too, the
   * record stays, saying a shift back is under way, for the next start to finish.
   */
  const undoFailedShift = async (
    key: string,
    record: PrepRecord,
    err: unknown,
    log: Logger,
  ): Promise<void> => {
    const untouched =
      err instanceof SysboxError && (err.code === 'invalid-request' || err.code === 'not-found');
    const reverting: PrepRecord = { ...record, holders: [], pending: 'revert' };
    try {
      if (untouched) await deps.store.delete(key);
      else {
        await deps.store.mutate(key, () => reverting);
        await finishPending(key, reverting, log);
      }
    } catch (undoErr) {
      log.error(
        { err: undoErr, source: record.source },
        'moving back a failed mount-source shift failed; the next start finishes it',
      );
    }
  };

  /**
   * The last holder shifts the source back. Its record stays (no holders, pending 'revert') until
   * the source is back, so a kill mid-walk leaves the shift back for the next start to finish.
   */
  const releaseOne = async (id: string, rec: PrepRecord, log: Logger): Promise<boolean> =>
    locked(rec.source, async () => {
      const key = prepKey(rec.source);
      let shiftBack: PrepRecord | undefined;
      let finishing = false;
      await deps.store.mutate(key, (cur) => {
        shiftBack = undefined;
        if (!cur || !cur.holders.includes(id)) return undefined;
        const holders = cur.holders.filter((h) => h !== id);
        if (holders.length > 0) return { ...cur, id: cur.id === id ? holders[0]! : cur.id, holders };
        if (cur.uidOffset === 0 && cur.gidOffset === 0) return REMOVE;
        // A prep cut short (pending 'shift') leaves the source on both sides of the offset too.
        finishing = cur.pending !== undefined;
        shiftBack = { ...cur, holders: [], pending: 'revert' };
        return shiftBack;
      });
      if (!shiftBack) return false;
      if (finishing) {
        await finishPending(key, shiftBack, log);
        return true;
      }
      await checkRecordedSource(key, shiftBack, log);
      // Only the container's ids move back: what the host made there meanwhile stays as it is.
      const only = containerIds(shiftBack.uidOffset, shiftBack.gidOffset);
      const r = await deps.shifter.shift(rec.source, -shiftBack.uidOffset, -shiftBack.gidOffset, {
        logger: log,
        only,
      });
      await deps.store.delete(key);
      log.info(
        { source: rec.source, container: id, ...r, leftAsTheyWere: (r.scanned ?? r.entries) - r.entries },
        'mount source shifted back',
      );
      return true;
    });

  const list = async (): Promise<PrepRecord[]> => (await deps.store.list()).map((v) => v.value);

  return {
    async prep(req, log = deps.log) {
      await deps.guard.idsDelegated({ uid: req.uid, gid: req.gid }, `prep for ${req.id}`);
      const sources: { source: string; exclusive: boolean }[] = [];
      for (const s of req.sources)
        sources.push({ source: await resolveSource(s.source), exclusive: s.exclusive });
      const prepared: string[] = [];
      const skipped: string[] = [];
      const done: string[] = [];
      try {
        for (const s of sources) {
          const shifted = await prepOne(req.id, req.uid, req.gid, s.source, s.exclusive, log);
          done.push(s.source);
          (shifted ? prepared : skipped).push(s.source);
        }
      } catch (err) {
        // Leave nothing half-done: release what this request took, newest first.
        for (const source of done.reverse()) {
          const rec = (await deps.store.get(prepKey(source)))?.value;
          if (rec)
            await releaseOne(req.id, rec, log).catch((e: unknown) =>
              log.warn({ err: e, source }, 'undoing prep failed'),
            );
        }
        throw err;
      }
      return { prepared, skipped };
    },
    async revertPrep(id, log = deps.log) {
      const reverted: string[] = [];
      for (const rec of await list()) {
        if (rec.holders.includes(id) && (await releaseOne(id, rec, log))) reverted.push(rec.source);
      }
      return { reverted };
    },
    list,
    count: async () => (await deps.store.keys()).length,
    async reconcile() {
      const report: PrepReconcileReport = { finished: [], failed: [] };
      for (const { key, value: rec } of await deps.store.list()) {
        if (!rec.pending) continue;
        try {
          await locked(rec.source, async () => {
            const cur = (await deps.store.get(key))?.value;
            if (cur?.pending) await finishPending(key, cur, deps.log);
          });
          report.finished.push({ source: rec.source, operation: rec.pending });
        } catch (err) {
          report.failed.push({ source: rec.source, reason: (err as Error).message });
          deps.log.error(
            { err, record: rec },
            'could not finish a mount-source shift that was cut short; its record is kept',
          );
        }
      }
      return report;
    },
  };
}
