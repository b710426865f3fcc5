/**
 * The gateway's one background retry: something asked until it answers, on a schedule that
 * doubles up to a cap (a silent shiftfs-mgr, start-up repairs a service did not answer yet).
 */

export interface RetrySchedule {
  firstMs: number;
  maxMs: number;
}

/**
 * Asks again in the background until an answer comes, after firstMs and then at intervals that
 * double up to maxMs, and hands it to onAnswer once. stop() ends it, waiting for an ask in flight.
 */
export function askUntilAnswered<T>(
  ask: () => Promise<T | undefined>,
  onAnswer: (answer: T) => void,
  schedule: RetrySchedule,
): { stop(): Promise<void> } {
  let stopped = false;
  let inFlight: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const attempt = (waitMs: number): void => {
    timer = setTimeout(() => {
      inFlight = (async () => {
        const answer = await ask();
        if (stopped) return;
        if (answer === undefined) attempt(Math.min(waitMs * 2, schedule.maxMs));
        else onAnswer(answer);
      })();
    }, waitMs);
  };
  attempt(schedule.firstMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await inFlight;
    },
  };
}
