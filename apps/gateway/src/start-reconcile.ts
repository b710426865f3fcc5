/**
 * The gateway's start-up repairs of its table (subid-reconcile.ts, the boot settle in manager.ts)
 * share one shape: each container's repair is queued on its container's lock before the gRPC
 * socket opens, so a call for that container waits for it; those that fail (a service not up
 * yet) are tried again on a schedule until every one is done.
 */
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import { askUntilAnswered, type RetrySchedule } from './background-retry.js';

export interface StartReconcile {
  /** Settles when every container's repair is done (never, once stopped before that). */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

export function startReconcile(opts: {
  ids: string[];
  /**
   * Queues one repair per id, in order, synchronously (on the container locks): the first pass's
   * are queued before startReconcile returns.
   */
  pass: (ids: string[]) => Promise<void>[];
  retry: RetrySchedule;
  log: Logger;
  /** What a failure's warning says could not be done yet. */
  what: string;
}): StartReconcile {
  const { log } = opts;
  const settle = async (ids: string[], repairs: Promise<void>[]): Promise<string[]> => {
    const outcomes = await Promise.allSettled(repairs);
    const left: string[] = [];
    for (const [i, o] of outcomes.entries()) {
      if (o.status === 'fulfilled') continue;
      left.push(ids[i]!);
      log.warn({ id: ids[i], err: o.reason as Error }, `${opts.what}; trying again`);
    }
    return left;
  };
  if (opts.ids.length === 0) return { done: Promise.resolve(), stop: async () => undefined };
  const first = settle(opts.ids, opts.pass(opts.ids));
  let stopped = false;
  let retries: { stop(): Promise<void> } | undefined;
  const done = first.then(
    (left) =>
      new Promise<void>((resolve) => {
        if (left.length === 0) return resolve();
        if (stopped) return;
        retries = askUntilAnswered(
          async () => {
            left = await settle(left, opts.pass(left));
            return left.length === 0 ? true : undefined;
          },
          () => resolve(),
          opts.retry,
        );
      }),
  );
  return {
    done,
    async stop() {
      stopped = true;
      await first;
      await retries?.stop();
    },
  };
}
