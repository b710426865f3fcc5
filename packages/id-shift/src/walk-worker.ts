/**
 * The body of one walker thread. It runs as an eval'd worker (`(${walkWorkerMain})()`), so it must
 * stay self-contained: no imports, modules only through `require` inside the function. That keeps
 * it working unchanged under vitest/tsx (TypeScript sources) and from dist.
 *
 * Synchronous fs calls on purpose: each libuv round trip costs more than the syscall it wraps,
 * and this thread has nothing else to do. The main thread only routes messages.
 */

/** Messages from the coordinator to a walker. */
export type ToWalker =
  | { t: 'begin'; data: WalkerData }
  | { t: 'end' }
  | { t: 'scan'; dirs: string[] }
  | { t: 'apply' }
  | { t: 'apply-list'; items: ListItem[] }
  | { t: 'collect' };

/** Messages from a walker to the coordinator. */
export type FromWalker =
  | { t: 'progress'; done: number }
  | { t: 'spill'; dirs: string[] }
  | { t: 'idle'; scanned: number; hardLinks: HardLinkSeen[]; skippedMounts: string[]; overflow?: string }
  | { t: 'applied'; done: number }
  | { t: 'collected'; uids: number[]; gids: number[] }
  | { t: 'error'; message: string; code?: string; path?: string };

/** A non-directory with several names: chowned in one place so all its names get one target. */
export interface HardLinkSeen {
  path: string;
  key: string;
  uid: number;
  gid: number;
  mode: number;
}

/** An entry to chown to an absolute owner (hard links, the root). */
export interface ListItem {
  path: string;
  uid: number;
  gid: number;
  /** The mode to restore after lchown when it carries setuid/setgid bits, else -1. */
  restoreMode: number;
}

export interface WalkerData {
  task: 'shift' | 'scan-ids';
  rootDev: number;
  crossMounts: boolean;
  uidOffset: number;
  gidOffset: number;
  /** Int32 flags shared with the coordinator: [0] someone is idle, [1] cancelled. */
  control: SharedArrayBuffer;
  batch: number;
}

export const CONTROL_HUNGRY = 0;
export const CONTROL_CANCELLED = 1;

export function walkWorkerMain(): void {
  const fs = require('node:fs') as typeof import('node:fs');
  const { parentPort } = require('node:worker_threads') as typeof import('node:worker_threads');
  const port = parentPort!;
  const MAX_ID = 2 ** 32 - 2;
  const S_IFMT = 0o170000;
  const S_IFDIR = 0o040000;
  const S_IFREG = 0o100000;
  const SETID_BITS = 0o6000;
  const LSTAT_OPTIONS = { throwIfNoEntry: false } as const;
  // Copies of CONTROL_HUNGRY / CONTROL_CANCELLED: module scope does not exist in the eval'd copy.
  const HUNGRY = 0;
  const CANCELLED = 1;

  // One operation's state; a 'begin' message resets it, so a thread serves many operations.
  let data: WalkerData;
  let control: Int32Array;
  let shifting = false;
  // Scanned entries, kept until the apply phase: the dry scan must see every owner before any
  // change, and keeping what it saw avoids a second lstat per entry. Paths are rebuilt from the
  // parent directory's path and the name, which is much smaller than a full path per entry.
  let dirPaths: string[] = [];
  let names: string[] = [];
  let parents = new Uint32Array(0);
  let uids = new Uint32Array(0);
  let gids = new Uint32Array(0);
  let modes = new Uint32Array(0);
  let stored = 0;
  let uidSet = new Set<number>();
  let gidSet = new Set<number>();
  let hardLinks: HardLinkSeen[] = [];
  let skippedMounts: string[] = [];
  let overflow: string | undefined;
  let scannedSinceIdle = 0;

  function begin(next: WalkerData): void {
    data = next;
    control = new Int32Array(next.control);
    shifting = next.task === 'shift';
    reset();
  }

  /** Drops what the last operation kept, so an idle thread holds no memory for it. */
  function reset(): void {
    dirPaths = [];
    names = [];
    parents = new Uint32Array(0);
    uids = new Uint32Array(0);
    gids = new Uint32Array(0);
    modes = new Uint32Array(0);
    stored = 0;
    uidSet = new Set();
    gidSet = new Set();
    hardLinks = [];
    skippedMounts = [];
    overflow = undefined;
    scannedSinceIdle = 0;
  }

  function grow(a: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> {
    const b = new Uint32Array(Math.max(4096, a.length * 2));
    b.set(a);
    return b;
  }

  function store(parent: number, name: string, uid: number, gid: number, mode: number): void {
    if (stored === uids.length) {
      parents = grow(parents);
      uids = grow(uids);
      gids = grow(gids);
      modes = grow(modes);
    }
    parents[stored] = parent;
    names.push(name);
    uids[stored] = uid;
    gids[stored] = gid;
    modes[stored] = mode;
    stored++;
  }

  function outOfRange(uid: number, gid: number): boolean {
    const u = uid + data.uidOffset;
    const g = gid + data.gidOffset;
    return u < 0 || u > MAX_ID || g < 0 || g > MAX_ID;
  }

  class Reported extends Error {}

  function fail(err: unknown, path: string): never {
    const e = err as NodeJS.ErrnoException;
    port.postMessage({ t: 'error', message: String(e?.message ?? e), code: e?.code, path } satisfies FromWalker);
    throw new Reported();
  }

  function scan(start: string[]): void {
    const stack = start.slice();
    let sinceBatch = 0;
    while (stack.length > 0) {
      if (Atomics.load(control, CANCELLED)) break;
      const dir = stack.pop()!;
      let entries: string[];
      try {
        entries = fs.readdirSync(dir);
      } catch (err) {
        // Vanished or replaced by a non-directory since its parent was read: nothing to shift.
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        fail(err, dir);
      }
      const dirIndex = dirPaths.length;
      if (shifting) dirPaths.push(dir);
      for (const name of entries) {
        const path = `${dir}/${name}`;
        let st: import('node:fs').Stats | undefined;
        try {
          st = fs.lstatSync(path, LSTAT_OPTIONS);
        } catch (err) {
          fail(err, path);
        }
        if (st === undefined) continue;
        const isDir = (st.mode & S_IFMT) === S_IFDIR;
        if (isDir && st.dev !== data.rootDev && !data.crossMounts) {
          skippedMounts.push(path);
          continue;
        }
        scannedSinceIdle++;
        sinceBatch++;
        if (shifting) {
          if (overflow === undefined && outOfRange(st.uid, st.gid)) overflow = `${path} (owner ${st.uid}:${st.gid})`;
          if (st.nlink > 1 && !isDir) {
            hardLinks.push({ path, key: `${st.dev}:${st.ino}`, uid: st.uid, gid: st.gid, mode: st.mode });
          } else {
            store(dirIndex, name, st.uid, st.gid, st.mode);
          }
        } else {
          uidSet.add(st.uid);
          gidSet.add(st.gid);
        }
        if (isDir) stack.push(path);
      }
      if (sinceBatch >= data.batch) {
        port.postMessage({ t: 'progress', done: sinceBatch } satisfies FromWalker);
        sinceBatch = 0;
        // Give the shallowest half of the pending directories (the biggest subtrees) to idle peers.
        if (Atomics.load(control, HUNGRY) && stack.length > 1) {
          port.postMessage({ t: 'spill', dirs: stack.splice(0, stack.length >> 1) } satisfies FromWalker);
        }
      }
    }
    if (sinceBatch > 0) port.postMessage({ t: 'progress', done: sinceBatch } satisfies FromWalker);
    port.postMessage({
      t: 'idle',
      scanned: scannedSinceIdle,
      hardLinks,
      skippedMounts,
      ...(overflow === undefined ? {} : { overflow }),
    } satisfies FromWalker);
    scannedSinceIdle = 0;
    hardLinks = [];
    skippedMounts = [];
  }

  function chownOne(path: string, uid: number, gid: number, restoreMode: number): void {
    try {
      fs.lchownSync(path, uid, gid);
      // chown clears setuid/setgid on regular files; put back exactly what the scan saw.
      if (restoreMode >= 0) fs.chmodSync(path, restoreMode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      fail(err, path);
    }
  }

  function restoreModeOf(mode: number): number {
    return (mode & S_IFMT) === S_IFREG && (mode & SETID_BITS) !== 0 ? mode & 0o7777 : -1;
  }

  function apply(): void {
    let sinceBatch = 0;
    let done = 0;
    for (let i = 0; i < stored; i++) {
      chownOne(`${dirPaths[parents[i]!]}/${names[i]}`, uids[i]! + data.uidOffset, gids[i]! + data.gidOffset, restoreModeOf(modes[i]!));
      if (++sinceBatch >= data.batch) {
        done += sinceBatch;
        port.postMessage({ t: 'progress', done: sinceBatch } satisfies FromWalker);
        sinceBatch = 0;
        if (Atomics.load(control, CANCELLED)) break;
      }
    }
    done += sinceBatch;
    if (sinceBatch > 0) port.postMessage({ t: 'progress', done: sinceBatch } satisfies FromWalker);
    port.postMessage({ t: 'applied', done } satisfies FromWalker);
  }

  function applyList(items: ListItem[]): void {
    for (const item of items) chownOne(item.path, item.uid, item.gid, item.restoreMode);
    port.postMessage({ t: 'progress', done: items.length } satisfies FromWalker);
    port.postMessage({ t: 'applied', done: items.length } satisfies FromWalker);
  }

  port.on('message', (msg: ToWalker) => {
    try {
      if (msg.t === 'begin') begin(msg.data);
      else if (msg.t === 'end') reset();
      else if (msg.t === 'scan') scan(msg.dirs);
      else if (msg.t === 'apply') apply();
      else if (msg.t === 'apply-list') applyList(msg.items);
      else port.postMessage({ t: 'collected', uids: [...uidSet], gids: [...gidSet] } satisfies FromWalker);
    } catch (err) {
      // The coordinator tears the pool down on the first error.
      if (!(err instanceof Reported)) port.postMessage({ t: 'error', message: String(err) } satisfies FromWalker);
    }
  });
}
