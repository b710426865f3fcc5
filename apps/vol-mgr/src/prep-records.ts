/**
 * A prep record read back from KV: checked against its key and its source before its source is
 * walked, and a walk it says was cut short finished.
 */
import { createHash } from 'node:crypto';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { unfinishedIds } from '@sysbox-mgr-ts/id-shift';
import type { StateStore } from '@sysbox-mgr-ts/kv-state';
import type { Logger } from 'pino';
import type { IdShifter, PrepRecord } from './prep.js';

/** KV keys allow few characters and paths are long: a source's record is keyed by its hash. */
export function prepKey(source: string): string {
  return createHash('sha256').update(source).digest('hex').slice(0, 40);
}

export interface PendingWalks {
  checkRecordedSource(key: string, rec: PrepRecord, log: Logger): Promise<void>;
  finishPending(key: string, rec: PrepRecord, log: Logger): Promise<PrepRecord | undefined>;
}

export function pendingWalks(deps: {
  store: StateStore<PrepRecord>;
  shifter: IdShifter;
  resolveSource: (source: string) => Promise<string>;
}): PendingWalks {
  const { resolveSource } = deps;
  /**
   * The record comes from KV, which others can write: it must sit under its source's key, and the
   * source it shifts is checked like a request's and, stored as its realpath, must still resolve
   * to itself.
   */
  const checkRecordedSource = async (key: string, rec: PrepRecord, log: Logger): Promise<void> => {
    if (prepKey(rec.source) !== key) {
      log.error({ record: rec, key }, 'prep record does not match its key: not shifted');
      throw new SysboxError(
        'invalid-request',
        `recorded mount source ${rec.source} is not the one its key names: not shifted`,
      );
    }
    const real = await resolveSource(rec.source).catch((err: unknown) => {
      log.error({ err, record: rec }, 'prep record names a source that is refused: not shifted');
      throw err;
    });
    if (real !== rec.source) {
      log.error({ record: rec, resolved: real }, 'prep record does not match its source: not shifted');
      throw new SysboxError(
        'invalid-request',
        `recorded mount source ${rec.source} resolves to ${real}: not shifted`,
      );
    }
  };

  /**
   * Finishes the walk a record says is under way: a shift forward, or a shift back after which the
   * record goes. Only the entries still on the source side move (id-shift's unfinishedIds), which
   * is safe when the source's own ids lay below the offset: host ids below the container's
   * subordinate range, a positive offset. A negative one is left to an operator.
   */
  const finishPending = async (
    key: string,
    rec: PrepRecord,
    log: Logger,
  ): Promise<PrepRecord | undefined> => {
    const sign = rec.pending === 'shift' ? 1 : -1;
    if (rec.uidOffset < 0 || rec.gidOffset < 0) {
      log.error(
        { record: rec },
        'a shift of this mount source was cut short and its offset is negative: left partly shifted for an operator',
      );
      throw new SysboxError(
        'internal',
        `mount source ${rec.source} is partly shifted by ${rec.uidOffset}:${rec.gidOffset} and cannot be finished safely`,
      );
    }
    await checkRecordedSource(key, rec, log);
    const uidOffset = sign * rec.uidOffset;
    const gidOffset = sign * rec.gidOffset;
    const r = await deps.shifter.shift(rec.source, uidOffset, gidOffset, {
      logger: log,
      only: unfinishedIds(uidOffset, gidOffset),
    });
    log.warn(
      { source: rec.source, operation: rec.pending, uidOffset, gidOffset, holders: rec.holders, ...r },
      'finished a mount-source shift that was cut short',
    );
    if (rec.pending === 'revert') {
      await deps.store.delete(key);
      return undefined;
    }
    return deps.store.mutate(key, (cur) => (cur ? { ...cur, pending: undefined } : undefined));
  };

  return { checkRecordedSource, finishPending };
}
