/**
 * Mount-source preparation (upstream mgr.prepMounts and its revert): a bind-mount source whose
 * owner is not the container's root is shifted by the offset, once, and shifted back when the
 * last container holding it lets go. Each source has one KV record, so a restart forgets nothing
 * and two containers never shift the same tree twice.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { PrepInfo, SysboxError, type VolPrepRequest } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { createKeyedLock } from './keyed-lock.js';

export type PrepRecord = z.infer<typeof PrepInfo>;
export const PrepRecordSchema = PrepInfo;

/** The id-shift package's operations this module uses. */
export interface IdShifter {
  shift(root: string, uidOffset: number, gidOffset: number, opts?: { logger?: Logger; signal?: AbortSignal }): Promise<{ entries: number; ms: number }>;
  needsShift(source: string, uid: number, gid: number): Promise<boolean>;
}

export interface PrepDeps {
  store: StateStore<PrepRecord>;
  shifter: IdShifter;
  /** System dirs, the data root and its parents are never sources; prep ids must be subordinate. */
  guard: HostGuard;
  log: Logger;
}

export interface MountPrep {
  prep(req: VolPrepRequest, log?: Logger): Promise<{ prepared: string[]; skipped: string[] }>;
  revertPrep(id: string, log?: Logger): Promise<{ reverted: string[] }>;
  list(): Promise<PrepRecord[]>;
}

/** KV keys allow few characters and paths are long: a source's record is keyed by its hash. */
export function prepKey(source: string): string {
  return createHash('sha256').update(source).digest('hex').slice(0, 40);
}

export function createMountPrep(deps: PrepDeps): MountPrep {
  const locked = createKeyedLock();

  const resolveSource = (source: string): Promise<string> => deps.guard.notSystemDir(source, 'mount source');

  const prepOne = async (id: string, uid: number, gid: number, source: string, exclusive: boolean, log: Logger): Promise<boolean> =>
    locked(source, async () => {
      const key = prepKey(source);
      const held = await deps.store.get(key);
      if (held) {
        if (held.value.holders.includes(id)) return false;
        const others = held.value.holders.join(', ');
        if (exclusive || held.value.exclusive) {
          log.warn({ source, container: id, holders: held.value.holders }, `exclusive mount source ${source} of ${id} is already in use by ${others}: not shifted again`);
        }
        if (await deps.shifter.needsShift(source, uid, gid)) {
          log.warn({ source, container: id, holders: held.value.holders }, `mount source ${source} is owned for ${others}, not for ${id}: left as is`);
        }
        await deps.store.mutate(key, (cur) =>
          cur ? { ...cur, exclusive: cur.exclusive || exclusive, holders: [...new Set([...cur.holders, id])] } : undefined,
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
      };
      // The record goes first: a crash mid-shift leaves it behind, so revert-prep still knows what to undo.
      await deps.store.create(key, record);
      if (!needs) return false;
      try {
        const r = await deps.shifter.shift(source, record.uidOffset, record.gidOffset, { logger: log });
        log.info({ source, container: id, uidOffset: record.uidOffset, gidOffset: record.gidOffset, ...r }, 'mount source shifted');
      } catch (err) {
        await deps.store.delete(key).catch(() => undefined);
        throw err;
      }
      return true;
    });

  const releaseOne = async (id: string, rec: PrepRecord, log: Logger): Promise<boolean> =>
    locked(rec.source, async () => {
      let shiftBack: PrepRecord | undefined;
      await deps.store.mutate(prepKey(rec.source), (cur) => {
        shiftBack = undefined;
        if (!cur || !cur.holders.includes(id)) return undefined;
        const holders = cur.holders.filter((h) => h !== id);
        if (holders.length > 0) return { ...cur, id: cur.id === id ? holders[0]! : cur.id, holders };
        shiftBack = cur;
        return REMOVE;
      });
      if (!shiftBack || (shiftBack.uidOffset === 0 && shiftBack.gidOffset === 0)) return false;
      // The record comes from KV, which others can write: the source it shifts back is checked like
      // a request's, and was stored as its realpath, so it must still resolve to itself.
      const real = await resolveSource(rec.source).catch((err: unknown) => {
        log.error({ err, record: shiftBack }, 'prep record names a source that is refused: not shifted back');
        throw err;
      });
      if (real !== rec.source || shiftBack.source !== rec.source) {
        log.error({ record: shiftBack, resolved: real }, 'prep record does not match its source: not shifted back');
        throw new SysboxError('invalid-request', `recorded mount source ${shiftBack.source} resolves to ${real}, not ${rec.source}: not shifted back`);
      }
      const r = await deps.shifter.shift(rec.source, -shiftBack.uidOffset, -shiftBack.gidOffset, { logger: log });
      log.info({ source: rec.source, container: id, ...r }, 'mount source shifted back');
      return true;
    });

  const list = async (): Promise<PrepRecord[]> => (await deps.store.list()).map((v) => v.value);

  return {
    async prep(req, log = deps.log) {
      await deps.guard.idsDelegated({ uid: req.uid, gid: req.gid }, `prep for ${req.id}`);
      const sources: { source: string; exclusive: boolean }[] = [];
      for (const s of req.sources) sources.push({ source: await resolveSource(s.source), exclusive: s.exclusive });
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
          if (rec) await releaseOne(req.id, rec, log).catch((e: unknown) => log.warn({ err: e, source }, 'undoing prep failed'));
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
  };
}
