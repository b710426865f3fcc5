/**
 * Coordinates walker threads: hands out directories, rebalances when a walker runs dry, and runs
 * each phase (scan, apply) to completion on every walker. It only routes messages, so the event
 * loop of the process that asked for a shift stays free.
 */
import { Worker } from 'node:worker_threads';
import {
  CONTROL_CANCELLED,
  CONTROL_HUNGRY,
  walkWorkerMain,
  type FromWalker,
  type HardLinkSeen,
  type ListItem,
  type ToWalker,
  type WalkerData,
} from './walk-worker.js';

/**
 * Transpilers (tsx, vitest) may wrap named functions in a `__name(fn, "name")` helper that lives
 * outside the function's text; the shim makes the eval'd copy independent of it.
 */
const WORKER_SOURCE = `var __name = (target) => target;\n(${walkWorkerMain.toString()})();`;

/** Entries a walker handles between two looks at its messages, progress and cancel flag. */
const BATCH = 512;

export interface PoolOptions {
  task: WalkerData['task'];
  rootDev: number;
  crossMounts: boolean;
  uidOffset: number;
  gidOffset: number;
  workers: number;
  onProgress: (delta: number) => void;
}

export interface ScanOutcome {
  scanned: number;
  hardLinks: HardLinkSeen[];
  skippedMounts: string[];
  /** The first entry found whose shifted owner leaves the valid range. */
  overflow?: string;
}

export class WalkerError extends Error {
  constructor(
    message: string,
    readonly code?: string,
    readonly path?: string,
  ) {
    super(message);
  }
}

export interface WalkPool {
  scan(dir: string): Promise<ScanOutcome>;
  apply(): Promise<number>;
  applyList(items: ListItem[]): Promise<number>;
  collect(): Promise<{ uids: number[]; gids: number[] }>;
  /** Asks every walker to stop at its next batch boundary. */
  cancel(): void;
  close(): Promise<void>;
}

interface Phase {
  onMessage(index: number, msg: FromWalker): void;
  reject(err: Error): void;
}

export function createWalkPool(opts: PoolOptions): WalkPool {
  const control = new Int32Array(new SharedArrayBuffer(8));
  const workerData: WalkerData = {
    task: opts.task,
    rootDev: opts.rootDev,
    crossMounts: opts.crossMounts,
    uidOffset: opts.uidOffset,
    gidOffset: opts.gidOffset,
    control: control.buffer as SharedArrayBuffer,
    batch: BATCH,
  };
  const workers = Array.from({ length: Math.max(1, opts.workers) }, () => new Worker(WORKER_SOURCE, { eval: true, workerData }));
  let phase: Phase | undefined;
  let broken: Error | undefined;

  const breakPool = (err: Error): void => {
    broken ??= err;
    phase?.reject(err);
    phase = undefined;
  };
  workers.forEach((w, index) => {
    w.on('message', (msg: FromWalker) => {
      if (msg.t === 'progress') opts.onProgress(msg.done);
      else if (msg.t === 'error') breakPool(new WalkerError(msg.message, msg.code, msg.path));
      else phase?.onMessage(index, msg);
    });
    w.on('error', (err) => breakPool(err));
    w.on('exit', (code) => breakPool(new Error(`walker thread exited (code ${code})`)));
  });

  const send = (index: number, msg: ToWalker): void => workers[index]!.postMessage(msg);

  function run<T>(start: (resolve: (v: T) => void) => Phase['onMessage']): Promise<T> {
    if (broken) return Promise.reject(broken);
    return new Promise<T>((resolve, reject) => {
      const current: Phase = { onMessage: () => undefined, reject };
      phase = current;
      current.onMessage = start((v) => {
        if (phase === current) phase = undefined;
        resolve(v);
      });
    });
  }

  return {
    scan(dir) {
      return run<ScanOutcome>((resolve) => {
        const outcome: ScanOutcome = { scanned: 0, hardLinks: [], skippedMounts: [] };
        const queue: string[] = [dir];
        const idle = new Set(workers.map((_, i) => i));
        const dispatch = (): void => {
          while (idle.size > 0 && queue.length > 0) {
            const share = Math.ceil(queue.length / idle.size);
            const index = idle.values().next().value!;
            idle.delete(index);
            send(index, { t: 'scan', dirs: queue.splice(0, share) });
          }
          Atomics.store(control, CONTROL_HUNGRY, idle.size > 0 ? 1 : 0);
          if (idle.size === workers.length && queue.length === 0) resolve(outcome);
        };
        dispatch();
        return (index, msg) => {
          if (msg.t === 'spill') {
            queue.push(...msg.dirs);
            dispatch();
          } else if (msg.t === 'idle') {
            outcome.scanned += msg.scanned;
            for (const h of msg.hardLinks) outcome.hardLinks.push(h);
            for (const m of msg.skippedMounts) outcome.skippedMounts.push(m);
            outcome.overflow ??= msg.overflow;
            idle.add(index);
            if (Atomics.load(control, CONTROL_CANCELLED)) queue.length = 0;
            dispatch();
          }
        };
      });
    },

    apply() {
      return run<number>((resolve) => {
        let pending = workers.length;
        let done = 0;
        workers.forEach((_, i) => send(i, { t: 'apply' }));
        return (_index, msg) => {
          if (msg.t !== 'applied') return;
          done += msg.done;
          if (--pending === 0) resolve(done);
        };
      });
    },

    applyList(items) {
      return run<number>((resolve) => {
        if (items.length === 0) {
          resolve(0);
          return () => undefined;
        }
        const share = Math.ceil(items.length / workers.length);
        let pending = 0;
        let done = 0;
        for (let i = 0; i * share < items.length; i++) {
          pending++;
          send(i, { t: 'apply-list', items: items.slice(i * share, (i + 1) * share) });
        }
        return (_index, msg) => {
          if (msg.t !== 'applied') return;
          done += msg.done;
          if (--pending === 0) resolve(done);
        };
      });
    },

    collect() {
      return run((resolve) => {
        const uids = new Set<number>();
        const gids = new Set<number>();
        let pending = workers.length;
        workers.forEach((_, i) => send(i, { t: 'collect' }));
        return (_index, msg) => {
          if (msg.t !== 'collected') return;
          for (const u of msg.uids) uids.add(u);
          for (const g of msg.gids) gids.add(g);
          if (--pending === 0) resolve({ uids: [...uids].sort((a, b) => a - b), gids: [...gids].sort((a, b) => a - b) });
        };
      });
    },

    cancel() {
      Atomics.store(control, CONTROL_CANCELLED, 1);
    },

    async close() {
      broken ??= new Error('pool closed');
      for (const w of workers) w.removeAllListeners('exit');
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
