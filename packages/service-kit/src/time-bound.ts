import { SysboxError } from '@sysbox-mgr-ts/contracts';

/**
 * `work`'s outcome, or a `timeout` SysboxError ("<what>: no answer within <ms> ms") once `ms` pass
 * first. The work itself is not stopped: for what cannot be cancelled (a syscall on a pool thread,
 * a handler mid-call), the caller answers in time and the work finishes or hangs on its own.
 */
export function withinTime<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SysboxError('timeout', `${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, limit]).finally(() => clearTimeout(timer));
}
