/** The id-shift walks of a clone or an upper dir, bounded in time, filtered when finishing one. */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { containerIds, unfinishedIds, type ShiftOnly } from '@sysbox-mgr-ts/id-shift';
import type { Logger } from '@sysbox-mgr-ts/service-kit';

/** The shared ID-shift walk (@sysbox-mgr-ts/id-shift `shift`), injected so tests can observe it. */
export type ShiftIds = (
  root: string,
  uidOffset: number,
  gidOffset: number,
  opts: { signal?: AbortSignal; logger?: Logger; crossMounts?: boolean; only?: ShiftOnly },
) => Promise<{ entries: number; scanned?: number; ms: number }>;

export type RunShift = (
  root: string,
  uidOffset: number,
  gidOffset: number,
  finishing: boolean,
) => Promise<void>;

export function createShiftRunner(deps: {
  shiftIds: ShiftIds;
  shiftTimeoutMs: number;
  log: Logger;
}): RunShift {
  const { log } = deps;
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
  return runShift;
}
