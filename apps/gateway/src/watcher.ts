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
  /** Loads the watch list from the table and starts polling. */
  start(): Promise<void>;
  /** Stops polling and waits for a tick in progress. */
  stop(): Promise<void>;
  /** Runs one poll now (tests and start-up). */
  tick(): Promise<void>;
}

export function createRemovalWatcher(opts: RemovalWatcherOptions): RemovalWatcher {
  const watched = new Map<string, string>();
  const resyncEvery = opts.resyncEveryTicks ?? 60;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = true;
  let ticks = 0;

  const resync = async (): Promise<void> => {
    const list = await opts.list();
    watched.clear();
    for (const w of list) watched.set(w.id, w.path);
  };

  const tick = async (): Promise<void> => {
    if (++ticks % resyncEvery === 0) {
      await resync().catch((err: unknown) => opts.log.warn({ err }, 'removal watch: table reload failed'));
    }
    const gone: string[] = [];
    for (const [id, path] of [...watched]) {
      if (await opts.exists(path)) continue;
      if (watched.get(id) !== path) continue;
      watched.delete(id);
      opts.log.info({ id, path }, 'removal watch: container rootfs is gone');
      gone.push(id);
    }
    // Independent containers are released side by side (one release at a time was measured to
    // serialize a host's removals); bounded, so a mass removal does not flood the services.
    const next = gone.values();
    const worker = async (): Promise<void> => {
      for (let r = next.next(); !r.done; r = next.next()) {
        try {
          await opts.onRemoved(r.value);
        } catch (err) {
          // Left in the table: the next reload retries it.
          opts.log.error({ id: r.value, err }, 'removal watch: release failed');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(gone.length, opts.parallelReleases ?? 8) }, worker));
  };

  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = tick()
        .catch((err: unknown) => opts.log.error({ err }, 'removal watch tick failed'))
        .finally(() => {
          running = undefined;
          schedule();
        });
    }, opts.intervalMs);
  };

  return {
    watch: (id, path) => void watched.set(id, path),
    unwatch: (id) => void watched.delete(id),
    watching: () => [...watched].map(([id, path]) => ({ id, path })),
    tick,
    async start() {
      await resync();
      stopped = false;
      schedule();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
