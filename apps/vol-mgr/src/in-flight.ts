export interface InFlight {
  /** Aborted when a stop gives up waiting: passed to every child process. */
  signal: AbortSignal;
  track<T>(p: Promise<T>): Promise<T>;
  readonly size: number;
  drain(graceMs: number): Promise<void>;
}

/** Counts operations in flight so a stop can wait for them, then cancel what is left. */
export function createInFlight(): InFlight {
  const running = new Set<Promise<unknown>>();
  const abort = new AbortController();
  return {
    signal: abort.signal,
    track<T>(p: Promise<T>): Promise<T> {
      running.add(p);
      void p.catch(() => undefined).finally(() => running.delete(p));
      return p;
    },
    get size(): number {
      return running.size;
    },
    /** Waits up to `graceMs` for running operations, then aborts them and waits for them to end. */
    async drain(graceMs: number): Promise<void> {
      if (running.size === 0) return;
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
      await Promise.race([Promise.allSettled([...running]), grace]);
      clearTimeout(timer);
      if (running.size > 0) {
        abort.abort(new Error('daemon stopping'));
        await Promise.allSettled([...running]);
      }
    },
  };
}
