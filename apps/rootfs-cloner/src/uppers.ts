/**
 * Upper-dir shifts: the runtime's upper dir of a container shifted by its offsets (or recorded as
 * shifted by the runtime itself), reverted on request, and finished at start when a kill cut one
 * short. Recorded in KV before the dir is touched.
 */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import { exists } from './fs.js';
import type { UpperRecord } from './records.js';
import type { RunShift } from './shift-runner.js';

export interface UpperShifts {
  shiftUpper(
    id: string,
    upperDir: string,
    uidOffset: number,
    gidOffset: number,
    alreadyShifted: boolean,
  ): Promise<void>;
  revertUpper(id: string): Promise<void>;
  finishUpper(rec: UpperRecord): Promise<'shift-upper' | 'revert-upper'>;
}

export function createUpperShifts(deps: {
  uppers: StateStore<UpperRecord>;
  guard: HostGuard;
  runShift: RunShift;
  /** Positive offsets into a delegated range. */
  checkOffsets(uidOffset: number, gidOffset: number, what: string): Promise<void>;
}): UpperShifts {
  const { runShift, checkOffsets } = deps;
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

  return { shiftUpper, revertUpper, finishUpper };
}
