/**
 * The body of one walker thread. It runs as an eval'd worker (`(${walkWorkerMain})(...)`), so it
 * must stay self-contained: no imports, modules only through `require` inside the function, and
 * the ACL codec handed in as an argument. That keeps it working unchanged under vitest/tsx
 * (TypeScript sources) and from dist.
 *
 * The syscalls run in the native addon (native/id_shift.c), one call per directory: scanDir reads
 * a directory and statx's (and, with ACLs on, lists the xattrs of) every entry; applyDir lchowns
 * what the scan kept. The main thread only routes messages.
 *
 * Paths inside the walkers are byte strings (latin1: one char per byte), so names that are not
 * UTF-8 survive unchanged; they are decoded as UTF-8 only for messages.
 */
import type { AclRow, NativeWalker, ShiftOnly, shiftAclXattr } from './syscalls.js';

/** Messages from the coordinator to a walker. */
export type ToWalker =
  | { t: 'begin'; data: WalkerData }
  | { t: 'end' }
  | { t: 'scan'; dirs: string[]; root?: RootEntry }
  | { t: 'apply' }
  | { t: 'apply-list'; items: ListItem[] }
  | { t: 'collect' };

/** Messages from a walker to the coordinator. */
export type FromWalker =
  | { t: 'progress'; done: number }
  | { t: 'spill'; dirs: string[] }
  | { t: 'idle'; scanned: number; hardLinks: HardLinkSeen[]; overflow?: string }
  | { t: 'applied'; done: number }
  | { t: 'collected'; uids: number[]; gids: number[] }
  | { t: 'error'; message: string; code?: string; path?: string };

/** The root is scanned as one entry of its parent directory ("/" as "." in itself). */
export interface RootEntry {
  dir: string;
  name: string;
}

/** A non-directory with several names: chowned in one place so all its names get one target. */
export interface HardLinkSeen {
  /** Byte string (latin1). */
  path: string;
  key: string;
  /** The owner this name is to get (its scanned owner shifted where `only` says). */
  toUid: number;
  toGid: number;
  mode: number;
  /** The shifted system.posix_acl_access value, when the file has one. */
  acl?: Uint8Array;
}

/** An entry to chown to an absolute owner (hard links). */
export interface ListItem {
  /** Byte string (latin1). */
  path: string;
  uid: number;
  gid: number;
  /** The mode to restore after the chown when it carries setuid/setgid bits, else -1. */
  restoreMode: number;
  acl?: Uint8Array;
}

export interface WalkerData {
  task: 'shift' | 'scan-ids';
  rootDevMajor: number;
  rootDevMinor: number;
  crossMounts: boolean;
  uidOffset: number;
  gidOffset: number;
  /** The ids that move; the others stay as they are. */
  only: ShiftOnly;
  /** Read and shift POSIX ACL xattrs. */
  acls: boolean;
  /** Int32 flags shared with the coordinator: [0] someone is idle, [1] cancelled. */
  control: SharedArrayBuffer;
  batch: number;
}

/** What a walker thread is started with (workerData). */
export interface WalkerStart {
  /** Resolved by the coordinator: an eval'd worker cannot resolve files from its own location. */
  addonPath: string;
}

export const CONTROL_HUNGRY = 0;
export const CONTROL_CANCELLED = 1;

export function walkWorkerMain(shiftAcl: typeof shiftAclXattr): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { constants } = require('node:os') as typeof import('node:os');
  const port = parentPort!;
  const native = require((workerData as WalkerStart).addonPath) as NativeWalker;
  const MAX_ID = 2 ** 32 - 2;
  const S_IFMT = 0o170000;
  const S_IFDIR = 0o040000;
  const S_IFREG = 0o100000;
  // Copy of META_FIELDS: module scope does not exist in the eval'd copy.
  const FIELDS = 10;
  const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
  // Copies of CONTROL_HUNGRY / CONTROL_CANCELLED, for the same reason.
  const HUNGRY = 0;
  const CANCELLED = 1;

  type EntryAcls = { access?: Uint8Array; default?: Uint8Array };

  // One operation's state; a 'begin' message resets it, so a thread serves many operations.
  let data: WalkerData;
  let control: Int32Array;
  let shifting = false;
  // Entries to change, kept from the scan until the apply phase with the owner each is to get: the
  // dry scan must see every owner before any change, and keeping what it saw avoids a second stat
  // per entry. Entries that nothing moves are not kept. Names live NUL-terminated in one byte
  // arena (a directory's names are appended in one copy), entries are grouped by parent directory
  // (a directory is read whole), so the apply phase hands applyDir one range per directory.
  let dirPaths: string[] = [];
  let arena = Buffer.alloc(0);
  let arenaUsed = 0;
  let parents = new Uint32Array(0);
  let nameStarts = new Uint32Array(0);
  let toUids = new Uint32Array(0);
  let toGids = new Uint32Array(0);
  let modes = new Uint32Array(0);
  let stored = 0;
  /** Shifted ACL xattr values by stored entry index: few entries have one. */
  let acls = new Map<number, EntryAcls>();
  let uidSet = new Set<number>();
  let gidSet = new Set<number>();
  let hardLinks: HardLinkSeen[] = [];
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
    arena = Buffer.alloc(0);
    arenaUsed = 0;
    parents = new Uint32Array(0);
    nameStarts = new Uint32Array(0);
    toUids = new Uint32Array(0);
    toGids = new Uint32Array(0);
    modes = new Uint32Array(0);
    stored = 0;
    acls = new Map();
    uidSet = new Set();
    gidSet = new Set();
    hardLinks = [];
    overflow = undefined;
    scannedSinceIdle = 0;
  }

  function grow(a: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> {
    const b = new Uint32Array(Math.max(4096, a.length * 2));
    b.set(a);
    return b;
  }

  /** Appends a directory's NUL-terminated names to the arena; returns where they start. */
  function keepNames(names: Buffer): number {
    if (arenaUsed + names.length > arena.length) {
      const bigger = Buffer.alloc(Math.max(64 * 1024, (arenaUsed + names.length) * 2));
      arena.copy(bigger, 0, 0, arenaUsed);
      arena = bigger;
    }
    names.copy(arena, arenaUsed);
    const base = arenaUsed;
    arenaUsed += names.length;
    return base;
  }

  function store(parent: number, nameStart: number, toUid: number, toGid: number, mode: number): number {
    if (stored === toUids.length) {
      parents = grow(parents);
      nameStarts = grow(nameStarts);
      toUids = grow(toUids);
      toGids = grow(toGids);
      modes = grow(modes);
    }
    parents[stored] = parent;
    nameStarts[stored] = nameStart;
    toUids[stored] = toUid;
    toGids[stored] = toGid;
    modes[stored] = mode;
    return stored++;
  }

  const bytes = (path: string): Buffer => Buffer.from(`${path}\0`, 'latin1');
  const display = (path: string): string => Buffer.from(path, 'latin1').toString('utf8');
  const joinPath = (dir: string, name: string): string =>
    name === '.' ? dir : dir === '/' ? `/${name}` : `${dir}/${name}`;

  const outOfRange = (id: number): boolean => id < 0 || id > MAX_ID;
  const moves = (id: number, [min, max]: readonly [number, number]): boolean => id >= min && id < max;

  class Reported extends Error {}

  function fail(errno: number, call: string, path: string): never {
    const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
    const shown = display(path);
    port.postMessage({
      t: 'error',
      message: `${call} ${shown}: ${code}`,
      code,
      path: shown,
    } satisfies FromWalker);
    throw new Reported();
  }

  /**
   * An ACL value shifted, or undefined when no qualifier moves (nothing to write) or one would leave
   * the range (the overflow is noted).
   */
  function shiftedAcl(path: () => string, value: Uint8Array | null): Uint8Array | undefined {
    if (value === null) return undefined;
    const shifted = shiftAcl(value, data.uidOffset, data.gidOffset, data.only);
    if (typeof shifted !== 'string') return shifted.equals(value) ? undefined : shifted;
    overflow ??= `${display(path())} (${shifted})`;
    return undefined;
  }

  function scan(start: string[], root: RootEntry | undefined): void {
    const stack = start.slice();
    let sinceBatch = 0;
    const readDir = (dir: string, only?: string): void => {
      const [count, meta, names, rawAcls, failure] = native.scanDir(
        bytes(dir),
        only === undefined ? null : bytes(only),
        data.rootDevMajor,
        data.rootDevMinor,
        data.crossMounts,
        shifting && data.acls,
      );
      if (failure) {
        const [call, errno, name] = failure;
        fail(errno, call, name.length === 0 ? dir : joinPath(dir, name.toString('latin1')));
      }
      if (count === 0) return;
      const dirIndex = dirPaths.length;
      const base = shifting ? keepNames(names) : 0;
      if (shifting) dirPaths.push(dir);
      let aclAt = 0;
      for (let i = 0, m = 0; i < count; i++, m += FIELDS) {
        const uid = meta[m + 2]!;
        const gid = meta[m + 3]!;
        const mode = meta[m + 4]!;
        const isDir = (mode & S_IFMT) === S_IFDIR;
        // Built only when needed: most entries are neither directories, hard links nor failures.
        const pathOf = (): string =>
          joinPath(dir, names.toString('latin1', meta[m]!, meta[m]! + meta[m + 1]!));
        scannedSinceIdle++;
        sinceBatch++;
        if (!shifting) {
          uidSet.add(uid);
          gidSet.add(gid);
        } else {
          const toUid = moves(uid, data.only.uid) ? uid + data.uidOffset : uid;
          const toGid = moves(gid, data.only.gid) ? gid + data.gidOffset : gid;
          if (overflow === undefined && (outOfRange(toUid) || outOfRange(toGid)))
            overflow = `${display(pathOf())} (owner ${uid}:${gid})`;
          let entryAcls: EntryAcls | undefined;
          if (rawAcls !== null && aclAt < rawAcls.length && rawAcls[aclAt]![0] === i) {
            const [, access, dflt] = rawAcls[aclAt++]!;
            const a = shiftedAcl(pathOf, access);
            const d = shiftedAcl(pathOf, dflt);
            if (a || d) entryAcls = { ...(a ? { access: a } : {}), ...(d ? { default: d } : {}) };
          }
          // Finishing a shift cut short leaves alone what the first walk already did.
          const changes = toUid !== uid || toGid !== gid || entryAcls !== undefined;
          if (changes && meta[m + 5]! > 1 && !isDir) {
            const key = `${meta[m + 8]}:${meta[m + 9]}:${meta[m + 7]}:${meta[m + 6]}`;
            hardLinks.push({
              path: pathOf(),
              key,
              toUid,
              toGid,
              mode,
              ...(entryAcls?.access ? { acl: entryAcls.access } : {}),
            });
          } else if (changes) {
            const index = store(dirIndex, base + meta[m]!, toUid, toGid, mode);
            if (entryAcls) acls.set(index, entryAcls);
          }
        }
        if (isDir) stack.push(pathOf());
      }
    };
    if (root) readDir(root.dir, root.name);
    while (stack.length > 0) {
      if (Atomics.load(control, CANCELLED)) break;
      readDir(stack.pop()!);
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
      ...(overflow === undefined ? {} : { overflow }),
    } satisfies FromWalker);
    scannedSinceIdle = 0;
    hardLinks = [];
  }

  /** The ACL rows of stored entries from..to-1, in index order, or null when there are none. */
  function aclRows(from: number, to: number): AclRow[] | null {
    if (acls.size === 0) return null;
    const rows: AclRow[] = [];
    for (let i = from; i < to; i++) {
      const entry = acls.get(i);
      if (entry) rows.push([i, entry.access ?? null, entry.default ?? null]);
    }
    return rows.length === 0 ? null : rows;
  }

  function nameAt(start: number): string {
    return arena.toString('latin1', start, arena.indexOf(0, start));
  }

  function apply(): void {
    let sinceBatch = 0;
    let done = 0;
    for (let from = 0; from < stored;) {
      const parent = parents[from]!;
      let to = from + 1;
      while (to < stored && parents[to] === parent) to++;
      const dir = dirPaths[parent]!;
      // The kept owners are the targets already (only some ids move), so no offset is added.
      const failure = native.applyDir(
        bytes(dir),
        arena,
        nameStarts,
        toUids,
        toGids,
        modes,
        from,
        to,
        0,
        0,
        aclRows(from, to),
      );
      if (failure) {
        const [call, errno, index] = failure;
        fail(errno, call, index < 0 ? dir : joinPath(dir, nameAt(nameStarts[index]!)));
      }
      sinceBatch += to - from;
      from = to;
      if (sinceBatch >= data.batch) {
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

  /** Hard links: absolute paths and absolute targets, so applyDir runs with no directory and no offset. */
  function applyList(items: ListItem[]): void {
    const paths = Buffer.from(items.map((item) => `${item.path}\0`).join(''), 'latin1');
    const starts = new Uint32Array(items.length);
    const listUids = new Uint32Array(items.length);
    const listGids = new Uint32Array(items.length);
    const listModes = new Uint32Array(items.length);
    const rows: AclRow[] = [];
    let at = 0;
    items.forEach((item, i) => {
      starts[i] = at;
      at += Buffer.byteLength(item.path, 'latin1') + 1;
      listUids[i] = item.uid;
      listGids[i] = item.gid;
      // applyDir restores setuid/setgid bits of regular files from the mode it is given.
      listModes[i] = item.restoreMode >= 0 ? S_IFREG | item.restoreMode : 0;
      if (item.acl) rows.push([i, item.acl, null]);
    });
    const failure = native.applyDir(
      null,
      paths,
      starts,
      listUids,
      listGids,
      listModes,
      0,
      items.length,
      0,
      0,
      rows.length === 0 ? null : rows,
    );
    if (failure) fail(failure[1], failure[0], items[Math.max(0, failure[2])]!.path);
    port.postMessage({ t: 'progress', done: items.length } satisfies FromWalker);
    port.postMessage({ t: 'applied', done: items.length } satisfies FromWalker);
  }

  port.on('message', (msg: ToWalker) => {
    try {
      if (msg.t === 'begin') begin(msg.data);
      else if (msg.t === 'end') reset();
      else if (msg.t === 'scan') scan(msg.dirs, msg.root);
      else if (msg.t === 'apply') apply();
      else if (msg.t === 'apply-list') applyList(msg.items);
      else port.postMessage({ t: 'collected', uids: [...uidSet], gids: [...gidSet] } satisfies FromWalker);
    } catch (err) {
      // The coordinator tears the pool down on the first error.
      if (!(err instanceof Reported))
        port.postMessage({ t: 'error', message: String(err) } satisfies FromWalker);
    }
  });
}
