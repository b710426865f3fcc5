/**
 * Coordinates walker threads: hands out directories, rebalances when a walker runs dry, and runs
 * each phase (scan, apply) to completion on every walker. It only routes messages, so the event
 * loop of the process that asked for a shift stays free.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { nativeWalkerPath, shiftAclXattr, type ShiftOnly } from './syscalls.js';
import {
  CONTROL_CANCELLED,
  CONTROL_HUNGRY,
  walkWorkerMain,
  type FromWalker,
  type HardLinkSeen,
  type ListItem,
  type RootEntry,
  type ToWalker,
  type WalkerData,
  type WalkerStart,
} from './walk-worker.js';

/**
 * Transpilers (tsx, vitest) may wrap named functions in a `__name(fn, "name")` helper that lives
 * outside the function's text; the shim makes the eval'd copy independent of it.
 */
const WORKER_SOURCE = `var __name = (target) => target;\n(${walkWorkerMain.toString()})(${shiftAclXattr.toString()});`;

/** Entries a walker handles between two looks at its messages, progress and cancel flag. */
const BATCH = 512;

export interface PoolOptions {
  task: WalkerData['task'];
  rootDevMajor: number;
  rootDevMinor: number;
  crossMounts: boolean;
  uidOffset: number;
  gidOffset: number;
  only: ShiftOnly;
  acls: boolean;
  workers: number;
  onProgress: (delta: number) => void;
}

export interface ScanOutcome {
  scanned: number;
  hardLinks: HardLinkSeen[];
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
  /** Scans the root entry and, when it is a directory, everything below it. */
  scan(root: RootEntry): Promise<ScanOutcome>;
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

/**
 * Idle walker threads kept between operations: starting one costs tens of milliseconds (hundreds
 * on a loaded machine), more than shifting a small tree. They are unref'd while idle, so they never
 * keep a process alive, and end after IDLE_TTL_MS without work.
 */
const IDLE_TTL_MS = 30_000;
const idleWalkers: Worker[] = [];
let idleTimer: NodeJS.Timeout | undefined;

function acquireWalkers(count: number): Worker[] {
  const taken = idleWalkers.splice(0, count);
  while (taken.length < count) {
    const w = new Worker(WORKER_SOURCE, {
      eval: true,
      execArgv: [],
      workerData: { addonPath: nativeWalkerPath() } satisfies WalkerStart,
    });
    // A thread that dies while idle just leaves the idle list; busy ones are watched per operation.
    w.on('error', () => undefined);
    w.on('exit', () => {
      const i = idleWalkers.indexOf(w);
      if (i >= 0) idleWalkers.splice(i, 1);
    });
    taken.push(w);
  }
  for (const w of taken) w.ref();
  return taken;
}

function releaseWalkers(walkers: Worker[]): void {
  for (const w of walkers) {
    w.postMessage({ t: 'end' } satisfies ToWalker);
    w.unref();
    idleWalkers.push(w);
  }
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    for (const w of idleWalkers.splice(0)) void w.terminate();
  }, IDLE_TTL_MS);
  idleTimer.unref();
}

/**
 * Walker threads busy at once in this process, over every walk. A walk starts at once with one
 * thread, even when others hold them all, and takes more only from what is free: a queue (first
 * come, first served, as before) made a container's 0.1 s revert wait behind other containers'
 * chowns, 1.6 s at 8 containers at a time, where 8 GNU chowns share the cores and the kernel
 * interleaves them (e2e bench, 8 lifecycles at a time: reverts 0.52-0.56 s against 1.58 s with
 * the queue; throughput 0.88x and 0.92x of the direct work against 0.92x). Bounded this way, 8
 * walks on 2 cores run 8 threads, as 8 chown processes would, not 16 (measured: 16 walkers on 2
 * cores starved the daemon's own event loop, so its other containers' short calls waited).
 */
const threadBudget = { free: availableParallelism() };

function takeThreads(want: number): number {
  const n = Math.max(1, Math.min(want, threadBudget.free));
  threadBudget.free -= n;
  return n;
}

function giveThreads(n: number): void {
  threadBudget.free += n;
}

/** A pool of at most `opts.workers` walkers, within the process's budget of walker threads. */
export function openWalkPool(opts: PoolOptions): WalkPool {
  const granted = takeThreads(Math.max(1, opts.workers));
  try {
    const pool = createWalkPool({ ...opts, workers: granted });
    const close = pool.close.bind(pool);
    let released = false;
    pool.close = async () => {
      try {
        await close();
      } finally {
        if (!released) giveThreads(granted);
        released = true;
      }
    };
    return pool;
  } catch (err) {
    giveThreads(granted);
    throw err;
  }
}

export function createWalkPool(opts: PoolOptions): WalkPool {
  const control = new Int32Array(new SharedArrayBuffer(8));
  const walkerData: WalkerData = {
    task: opts.task,
    rootDevMajor: opts.rootDevMajor,
    rootDevMinor: opts.rootDevMinor,
    crossMounts: opts.crossMounts,
    uidOffset: opts.uidOffset,
    gidOffset: opts.gidOffset,
    only: opts.only,
    acls: opts.acls,
    control: control.buffer as SharedArrayBuffer,
    batch: BATCH,
  };
  const workers = acquireWalkers(Math.max(1, opts.workers));
  let phase: Phase | undefined;
  let broken: Error | undefined;
  let closed = false;

  const breakPool = (err: Error): void => {
    broken ??= err;
    phase?.reject(err);
    phase = undefined;
  };
  const listeners = workers.map((w, index) => {
    const onMessage = (msg: FromWalker): void => {
      if (msg.t === 'progress') opts.onProgress(msg.done);
      else if (msg.t === 'error') breakPool(new WalkerError(msg.message, msg.code, msg.path));
      else phase?.onMessage(index, msg);
    };
    const onError = (err: Error): void => breakPool(err);
    const onExit = (code: number): void => breakPool(new Error(`walker thread exited (code ${code})`));
    w.on('message', onMessage);
    w.on('error', onError);
    w.on('exit', onExit);
    w.postMessage({ t: 'begin', data: walkerData } satisfies ToWalker);
    return { onMessage, onError, onExit };
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
    scan(root) {
      return run<ScanOutcome>((resolve) => {
        const outcome: ScanOutcome = { scanned: 0, hardLinks: [] };
        const queue: string[] = [];
        const idle = new Set(workers.map((_, i) => i));
        idle.delete(0);
        send(0, { t: 'scan', dirs: [], root });
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
          if (--pending === 0)
            resolve({ uids: [...uids].sort((a, b) => a - b), gids: [...gids].sort((a, b) => a - b) });
        };
      });
    },

    cancel() {
      Atomics.store(control, CONTROL_CANCELLED, 1);
    },

    async close() {
      if (closed) return;
      closed = true;
      workers.forEach((w, i) => {
        w.off('message', listeners[i]!.onMessage);
        w.off('error', listeners[i]!.onError);
        w.off('exit', listeners[i]!.onExit);
      });
      // A walker that failed, was cancelled or is still in a phase may be mid-batch: do not hand
      // it to the next caller.
      if (broken || phase || Atomics.load(control, CONTROL_CANCELLED)) {
        Atomics.store(control, CONTROL_CANCELLED, 1);
        await Promise.all(workers.map((w) => w.terminate()));
      } else releaseWalkers(workers);
      broken ??= new Error('pool closed');
    },
  };
}
