/**
 * rsync between a container's rootfs and its volume, as upstream runs it, with ownership shifted
 * through --usermap/--groupmap, a time bound, cancellation, and a watch on the target so a copy
 * whose target is removed (the container is being deleted) ends at once instead of running on.
 */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { run } from '@sysbox-mgr-ts/exec/run';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import type { Logger } from 'pino';
import { exists } from './paths.js';

export type ShiftDirection = 'up' | 'down';

/** The id-shift package's scan, injected so tests and the bench can count what it sees. */
export type ScanIds = (root: string) => Promise<{ uids: number[]; gids: number[]; entries: number }>;

/**
 * `src:dst,...` for every id present. Up adds the offset; down subtracts it and leaves alone ids
 * below the offset (they were never shifted: subtracting would wrap around, as upstream's uint32 did).
 */
export function idMapOption(ids: readonly number[], offset: number, direction: ShiftDirection): string {
  const pairs: string[] = [];
  for (const id of ids) {
    if (direction === 'up') pairs.push(`${id}:${id + offset}`);
    else if (id >= offset) pairs.push(`${id}:${id - offset}`);
  }
  return pairs.join(',');
}

export interface RsyncPlan {
  src: string;
  dest: string;
  shift?: { uid: number; gid: number; direction: ShiftDirection; scanIds: ScanIds };
  timeoutMs: number;
  signal?: AbortSignal;
  /** Path whose disappearance means the copy is moot: the copy is stopped and counts as done. */
  watch?: string;
  /** Extra rsync flags (tests throttle with --bwlimit). */
  extraArgs?: readonly string[];
  log: Logger;
  what: string;
  /** Records the duration and entries of a completed copy under `op`. */
  metrics?: AppMetrics;
  op?: 'sync-in' | 'sync-out';
}

export interface RsyncOutcome {
  /** False when the watched path vanished and the copy was stopped. */
  completed: boolean;
  ms: number;
  entries?: number;
}

const WATCH_INTERVAL_MS = 200;
const PROGRESS_INTERVAL_MS = 5000;

export async function rsyncTree(plan: RsyncPlan): Promise<RsyncOutcome> {
  const started = performance.now();
  const done = plan.op && plan.metrics?.work('rsync', plan.op);
  const args = ['-rauqlH', '--no-devices', '--delete'];
  let entries: number | undefined;
  if (plan.shift) {
    const ids = await plan.shift.scanIds(plan.src);
    entries = ids.entries;
    const usermap = idMapOption(ids.uids, plan.shift.uid, plan.shift.direction);
    const groupmap = idMapOption(ids.gids, plan.shift.gid, plan.shift.direction);
    if (usermap) args.push(`--usermap=${usermap}`);
    if (groupmap) args.push(`--groupmap=${groupmap}`);
  }
  args.push(...(plan.extraArgs ?? []), `${plan.src}/`, plan.dest);

  const abort = new AbortController();
  const onOuterAbort = (): void => abort.abort(plan.signal?.reason);
  plan.signal?.addEventListener('abort', onOuterAbort, { once: true });
  let targetGone = false;
  let watching = false;
  const watchTimer = plan.watch
    ? setInterval(() => {
        if (watching) return;
        watching = true;
        void exists(plan.watch!)
          .then((present) => {
            if (!present && !targetGone) {
              targetGone = true;
              abort.abort(new Error(`${plan.watch} vanished`));
            }
          })
          .catch(() => undefined)
          .finally(() => (watching = false));
      }, WATCH_INTERVAL_MS)
    : undefined;
  const progressTimer = setInterval(
    () =>
      plan.log.info(
        { what: plan.what, entries, elapsedMs: Math.round(performance.now() - started) },
        'rsync still running',
      ),
    PROGRESS_INTERVAL_MS,
  );
  plan.log.info(
    { what: plan.what, src: plan.src, dest: plan.dest, entries, shift: plan.shift?.direction },
    'rsync started',
  );
  try {
    await run('rsync', args, {
      timeout: plan.timeoutMs,
      signal: abort.signal,
      okExitCodes: [24],
      logger: plan.log,
      dieWithParent: true,
    });
  } catch (err) {
    if (targetGone || (plan.watch && !(await exists(plan.watch)))) {
      plan.log.info(
        { what: plan.what, watch: plan.watch },
        'rsync stopped: its target vanished (container being removed)',
      );
      return { completed: false, ms: Math.round(performance.now() - started), entries };
    }
    throw err instanceof SysboxError ? err : SysboxError.from(err);
  } finally {
    clearInterval(watchTimer);
    clearInterval(progressTimer);
    plan.signal?.removeEventListener('abort', onOuterAbort);
  }
  const ms = Math.round(performance.now() - started);
  plan.log.info({ what: plan.what, entries, ms }, 'rsync done');
  if (done) done(entries);
  return { completed: true, ms, entries };
}
