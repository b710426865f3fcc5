/**
 * Removal watch: polls whether each stopped container's watch path still exists. Polling keeps no
 * file descriptor per container (upstream's inotify-style monitor ran out around 512 containers),
 * and the watch list is the container table itself, so a restarted gateway resumes every watch.
 */
import type { Logger } from '@sysbox-mgr-ts/service-kit';

export interface WatchedPath {
  id: string;
  path: string;
}

export interface RemovalWatcherOptions {
  intervalMs: number;
  /** Reload the list from the table every this many ticks (picks up other gateways' watches). */
  resyncEveryTicks?: number;
  exists(path: string): Promise<boolean>;
  list(): Promise<WatchedPath[]>;
  onRemoved(id: string): Promise<unknown>;
  /** Releases run at once at most (default 8). */
  parallelReleases?: number;
  log: Logger;
}

export interface RemovalWatcher {
  watch(id: string, path: string): void;
  unwatch(id: string): void;
  watching(): WatchedPath[];
  /** Loads the watch list (`initial`, when the caller has just read the table; else from the table) and starts polling. */
  start(initial?: WatchedPath[]): Promise<void>;
  /** Stops polling and waits for a poll, a reload and releases in progress. */
  stop(): Promise<void>;
  /** Runs one poll now and waits for the releases it started (tests). */
  tick(): Promise<void>;
}

export function createRemovalWatcher(opts: RemovalWatcherOptions): RemovalWatcher {
  const watched = new Map<string, string>();
  const resyncEvery = opts.resyncEveryTicks ?? 60;
  const parallel = opts.parallelReleases ?? 8;
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> | undefined;
  let stopped = true;
  let ticks = 0;

  // A reload reads the table from KV, which can wait out a JetStream election for seconds: it runs
  // beside the polls, never inside one, so a removal is still seen (and released) meanwhile.
  let reloading: Promise<void> | undefined;
  /** Ids watched or unwatched while a reload was reading: the table read may predate them. */
  const changedDuringReload = new Set<string>();
  const reload = async (listed?: WatchedPath[]): Promise<void> => {
    changedDuringReload.clear();
    const list = new Map((listed ?? (await opts.list())).map((w) => [w.id, w.path]));
    for (const id of [...watched.keys()])
      if (!list.has(id) && !changedDuringReload.has(id)) watched.delete(id);
    for (const [id, path] of list)
      if (!changedDuringReload.has(id) && !releasing.has(id)) watched.set(id, path);
  };
  const startReload = (): void => {
    reloading ??= reload()
      .catch((err: unknown) => opts.log.warn({ err }, 'removal watch: table reload failed'))
      .finally(() => (reloading = undefined));
  };

  // Releases run beside the polls, at most `parallel` at once: one release waiting on a service
  // (a restart, a failover) must not hold up seeing and releasing other removed containers, and a
  // mass removal must not flood the services.
  const releasing = new Map<string, Promise<void>>();
  let activeReleases = 0;
  const waitingForSlot: (() => void)[] = [];
  const withReleaseSlot = async (fn: () => Promise<unknown>): Promise<void> => {
    if (activeReleases >= parallel) await new Promise<void>((resume) => waitingForSlot.push(resume));
    else activeReleases++;
    try {
      await fn();
    } finally {
      // The slot passes straight to a waiter, so a newcomer cannot slip in between.
      const next = waitingForSlot.shift();
      if (next) next();
      else activeReleases--;
    }
  };
  const release = (id: string): Promise<void> => {
    const inFlight = releasing.get(id);
    if (inFlight) return inFlight;
    const done = withReleaseSlot(() => opts.onRemoved(id))
      // Left in the table: the next reload watches it again, and the poll after retries it.
      .catch((err: unknown) => opts.log.error({ id, err }, 'removal watch: release failed'))
      .finally(() => releasing.delete(id));
    releasing.set(id, done);
    return done;
  };

  /** Checks every watch path once; returns the releases it started. */
  const poll = async (): Promise<Promise<void>[]> => {
    if (++ticks % resyncEvery === 0) startReload();
    const started: Promise<void>[] = [];
    for (const [id, path] of [...watched]) {
      if (await opts.exists(path)) continue;
      if (watched.get(id) !== path) continue;
      watched.delete(id);
      opts.log.info({ id, path }, 'removal watch: container rootfs is gone');
      started.push(release(id));
    }
    return started;
  };

  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      polling = poll()
        .then(() => undefined)
        .catch((err: unknown) => opts.log.error({ err }, 'removal watch poll failed'))
        .finally(() => {
          polling = undefined;
          schedule();
        });
    }, opts.intervalMs);
  };

  return {
    watch: (id, path) => {
      changedDuringReload.add(id);
      watched.set(id, path);
    },
    unwatch: (id) => {
      changedDuringReload.add(id);
      watched.delete(id);
    },
    watching: () => [...watched].map(([id, path]) => ({ id, path })),
    async tick() {
      await Promise.all(await poll());
    },
    async start(initial) {
      await reload(initial);
      stopped = false;
      schedule();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await polling;
      await reloading;
      await Promise.all(releasing.values());
    },
  };
}
