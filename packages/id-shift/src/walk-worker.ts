/**
 * The body of one walker thread. It runs as an eval'd worker (`(${walkWorkerMain})(...)`), so it
 * must stay self-contained: no imports, modules only through `require` inside the function, and
 * the syscall layer handed in as an argument. That keeps it working unchanged under vitest/tsx
 * (TypeScript sources) and from dist.
 *
 * Every entry costs a few direct syscalls through koffi (see syscalls.ts), relative to an open
 * directory fd: getdents64 (amortised), statx, listxattrat (when ACLs are on) in the scan, then
 * fchownat in the apply phase. The main thread only routes messages.
 *
 * Paths inside the walkers are byte strings (latin1: one char per byte), so names that are not
 * UTF-8 survive unchanged; they are decoded as UTF-8 only for messages.
 */
import type { linuxSyscalls, shiftAclXattr } from './syscalls.js';

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
  uid: number;
  gid: number;
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
  /** Read and shift POSIX ACL xattrs. */
  acls: boolean;
  /** Int32 flags shared with the coordinator: [0] someone is idle, [1] cancelled. */
  control: SharedArrayBuffer;
  batch: number;
}

/** What a walker thread is started with (workerData). */
export interface WalkerStart {
  /** Resolved by the coordinator: an eval'd worker cannot resolve packages from its own location. */
  koffiPath: string;
}

export const CONTROL_HUNGRY = 0;
export const CONTROL_CANCELLED = 1;

export function walkWorkerMain(makeSyscalls: typeof linuxSyscalls, shiftAcl: typeof shiftAclXattr): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const { constants } = require('node:os') as typeof import('node:os');
  const port = parentPort!;
  const sys = makeSyscalls(require((workerData as WalkerStart).koffiPath));
  const stat = sys.stat;
  const MAX_ID = 2 ** 32 - 2;
  const S_IFMT = 0o170000;
  const S_IFDIR = 0o040000;
  const S_IFREG = 0o100000;
  const S_IFLNK = 0o120000;
  const SETID_BITS = 0o6000;
  const ENOENT = constants.errno.ENOENT;
  const ENOTDIR = constants.errno.ENOTDIR;
  const ELOOP = constants.errno.ELOOP;
  const ENOSYS = constants.errno.ENOSYS;
  const ENODATA = constants.errno.ENODATA;
  const EOPNOTSUPP = constants.errno.EOPNOTSUPP;
  const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
  const ACL_ACCESS = 'system.posix_acl_access';
  const ACL_DEFAULT = 'system.posix_acl_default';
  // Copies of CONTROL_HUNGRY / CONTROL_CANCELLED: module scope does not exist in the eval'd copy.
  const HUNGRY = 0;
  const CANCELLED = 1;

  // Reused for every call: getdents64 output, the NUL-terminated current name, xattr lists/values.
  const dents = Buffer.alloc(64 * 1024);
  const nameBuf = Buffer.alloc(4096);
  const xattrList = Buffer.alloc(64 * 1024);
  const xattrValue = Buffer.alloc(64 * 1024);

  // One operation's state; a 'begin' message resets it, so a thread serves many operations.
  let data: WalkerData;
  let control: Int32Array;
  let shifting = false;
  // Scanned entries, kept until the apply phase: the dry scan must see every owner before any
  // change, and keeping what it saw avoids a second stat per entry. Names live NUL-terminated in
  // one byte arena, entries are grouped by parent directory (a directory is read whole).
  let dirPaths: string[] = [];
  let arena = Buffer.alloc(0);
  let arenaUsed = 0;
  let parents = new Uint32Array(0);
  let nameStarts = new Uint32Array(0);
  let uids = new Uint32Array(0);
  let gids = new Uint32Array(0);
  let modes = new Uint32Array(0);
  let stored = 0;
  /** Shifted ACL xattr values by stored entry index: few entries have one. */
  let acls = new Map<number, { access?: Uint8Array; default?: Uint8Array }>();
  /** Filesystems (dev major:minor) that answered EOPNOTSUPP to an xattr list. */
  let noXattrDevs = new Set<string>();
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
    uids = new Uint32Array(0);
    gids = new Uint32Array(0);
    modes = new Uint32Array(0);
    stored = 0;
    acls = new Map();
    noXattrDevs = new Set();
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

  /** Keeps the entry whose NUL-terminated name is in nameBuf[0..nameLen]. */
  function store(parent: number, nameLen: number): number {
    if (stored === uids.length) {
      parents = grow(parents);
      nameStarts = grow(nameStarts);
      uids = grow(uids);
      gids = grow(gids);
      modes = grow(modes);
    }
    if (arenaUsed + nameLen + 1 > arena.length) {
      const bigger = Buffer.alloc(Math.max(64 * 1024, (arenaUsed + nameLen + 1) * 2));
      arena.copy(bigger, 0, 0, arenaUsed);
      arena = bigger;
    }
    for (let b = 0; b <= nameLen; b++) arena[arenaUsed + b] = nameBuf[b]!;
    parents[stored] = parent;
    nameStarts[stored] = arenaUsed;
    uids[stored] = stat.uid;
    gids[stored] = stat.gid;
    modes[stored] = stat.mode;
    arenaUsed += nameLen + 1;
    return stored++;
  }

  const bytes = (path: string): Buffer => Buffer.from(`${path}\0`, 'latin1');
  const display = (path: string): string => Buffer.from(path, 'latin1').toString('utf8');
  const joinPath = (dir: string, name: string): string => (name === '.' ? dir : dir === '/' ? `/${name}` : `${dir}/${name}`);

  function outOfRange(uid: number, gid: number): boolean {
    const u = uid + data.uidOffset;
    const g = gid + data.gidOffset;
    return u < 0 || u > MAX_ID || g < 0 || g > MAX_ID;
  }

  class Reported extends Error {}

  function fail(errno: number, call: string, path: string): never {
    const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
    const shown = display(path);
    port.postMessage({ t: 'error', message: `${call} ${shown}: ${code}`, code, path: shown } satisfies FromWalker);
    throw new Reported();
  }

  /** Whether `attr` is one of the NUL-separated names in xattrList[0..length]. */
  function listed(attr: string, length: number): boolean {
    for (let at = xattrList.indexOf(attr, 0, 'latin1'); at >= 0 && at < length; at = xattrList.indexOf(attr, at + 1, 'latin1')) {
      if ((at === 0 || xattrList[at - 1] === 0) && xattrList[at + attr.length] === 0) return true;
    }
    return false;
  }

  /** Reads one ACL xattr and returns it shifted; records an overflow. ENODATA (raced away) = none. */
  function shiftedAcl(path: string, attr: string): Uint8Array | undefined {
    const n = sys.lgetxattr(bytes(path), attr, xattrValue);
    if (n === -ENODATA || n === -ENOENT) return undefined;
    if (n < 0) fail(-n, 'lgetxattr', path);
    const shifted = shiftAcl(xattrValue.subarray(0, n), data.uidOffset, data.gidOffset);
    if (typeof shifted !== 'string') return shifted;
    overflow ??= `${display(path)} (${shifted})`;
    return undefined;
  }

  /**
   * The shifted ACLs of the entry named in nameBuf, or undefined when it has none. One listxattrat
   * per entry (cheaper than two getxattrs, and relative to the directory fd); the values are read
   * only when listed.
   */
  function readAcls(dirFd: number, pathOf: () => string, isDir: boolean): { access?: Uint8Array; default?: Uint8Array } | undefined {
    if (noXattrDevs.size > 0 && noXattrDevs.has(`${stat.devMajor}:${stat.devMinor}`)) return undefined;
    let n = sys.listxattrat(dirFd, nameBuf, xattrList);
    if (n === -ENOSYS) n = sys.llistxattr(bytes(pathOf()), xattrList);
    if (n === -EOPNOTSUPP) {
      noXattrDevs.add(`${stat.devMajor}:${stat.devMinor}`);
      return undefined;
    }
    if (n === -ENOENT) return undefined;
    if (n < 0) fail(-n, 'listxattr', pathOf());
    if (n === 0) return undefined;
    const path = pathOf();
    const access = listed(ACL_ACCESS, n) ? shiftedAcl(path, ACL_ACCESS) : undefined;
    const dflt = isDir && listed(ACL_DEFAULT, n) ? shiftedAcl(path, ACL_DEFAULT) : undefined;
    if (!access && !dflt) return undefined;
    return { ...(access ? { access } : {}), ...(dflt ? { default: dflt } : {}) };
  }

  /**
   * Stats the entry named in nameBuf (nameLen bytes) in the open directory and keeps it. Returns
   * its path when it is a directory to descend into.
   */
  function visit(dirFd: number, dir: string, dirIndex: number, nameLen: number, isRoot: boolean): string | undefined {
    const r = sys.statx(dirFd, nameBuf);
    // Built only when needed: most entries are neither directories, hard links nor failures.
    const pathOf = (): string => joinPath(dir, nameBuf.toString('latin1', 0, nameLen));
    if (r === -ENOENT) return undefined;
    if (r < 0) fail(-r, 'statx', pathOf());
    const type = stat.mode & S_IFMT;
    // A mount point (directory or file) belongs to the other filesystem.
    if (!isRoot && !data.crossMounts && (stat.devMajor !== data.rootDevMajor || stat.devMinor !== data.rootDevMinor)) return undefined;
    scannedSinceIdle++;
    if (!shifting) {
      uidSet.add(stat.uid);
      gidSet.add(stat.gid);
      return type === S_IFDIR ? pathOf() : undefined;
    }
    if (overflow === undefined && outOfRange(stat.uid, stat.gid)) overflow = `${display(pathOf())} (owner ${stat.uid}:${stat.gid})`;
    const entryAcls = data.acls && type !== S_IFLNK ? readAcls(dirFd, pathOf, type === S_IFDIR) : undefined;
    if (stat.nlink > 1 && type !== S_IFDIR) {
      const key = `${stat.devMajor}:${stat.devMinor}:${stat.ino()}`;
      const { uid, gid, mode } = stat;
      hardLinks.push({ path: pathOf(), key, uid, gid, mode, ...(entryAcls?.access ? { acl: entryAcls.access } : {}) });
    } else {
      const index = store(dirIndex, nameLen);
      if (entryAcls) acls.set(index, entryAcls);
    }
    return type === S_IFDIR ? pathOf() : undefined;
  }

  function scan(start: string[], root: RootEntry | undefined): void {
    const stack = start.slice();
    let sinceBatch = 0;
    const readDir = (dir: string, only?: string): void => {
      const fd = sys.openDir(bytes(dir));
      // Vanished or replaced by a non-directory (or a symlink) since its parent was read.
      if (fd === -ENOENT || fd === -ENOTDIR || fd === -ELOOP) return;
      if (fd < 0) fail(-fd, 'open', dir);
      const dirIndex = dirPaths.length;
      if (shifting) dirPaths.push(dir);
      try {
        if (only !== undefined) {
          if (only.length >= nameBuf.length) fail(constants.errno.ENAMETOOLONG, 'statx', only);
          const len = nameBuf.write(only, 0, 'latin1');
          nameBuf[len] = 0;
          const sub = visit(fd, dir, dirIndex, len, true);
          if (sub !== undefined) stack.push(sub);
          sinceBatch++;
          return;
        }
        for (let n = sys.getdents(fd, dents); n !== 0; n = sys.getdents(fd, dents)) {
          if (n < 0) fail(-n, 'getdents64', dir);
          for (let at = 0; at < n; at += dents.readUInt16LE(at + 16)) {
            // Names are short: a JS byte loop beats a native indexOf + copy per entry.
            const nameAt = at + 19;
            let len = 0;
            for (let b = dents[nameAt]!; b !== 0; b = dents[nameAt + ++len]!) nameBuf[len] = b;
            nameBuf[len] = 0;
            // Skip "." and "..".
            if (nameBuf[0] === 0x2e && (len === 1 || (len === 2 && nameBuf[1] === 0x2e))) continue;
            const sub = visit(fd, dir, dirIndex, len, false);
            if (sub !== undefined) stack.push(sub);
            sinceBatch++;
          }
        }
      } finally {
        sys.close(fd);
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
    port.postMessage({ t: 'idle', scanned: scannedSinceIdle, hardLinks, ...(overflow === undefined ? {} : { overflow }) } satisfies FromWalker);
    scannedSinceIdle = 0;
    hardLinks = [];
  }

  function restoreModeOf(mode: number): number {
    return (mode & S_IFMT) === S_IFREG && (mode & SETID_BITS) !== 0 ? mode & 0o7777 : -1;
  }

  /**
   * chown (relative to dirFd, name in nameBuf), then the ACLs, then the setuid/setgid bits chown
   * cleared: exactly the mode the scan saw. False when the entry has vanished.
   */
  function chownOne(dirFd: number, dir: string, nameLen: number, uid: number, gid: number, restoreMode: number, entryAcls?: { access?: Uint8Array; default?: Uint8Array }): void {
    const pathOf = (): string => {
      const name = nameBuf.toString('latin1', 0, nameLen);
      return dir === '' ? name : joinPath(dir, name);
    };
    const r = sys.fchownat(dirFd, nameBuf, uid, gid);
    if (r === -ENOENT) return;
    if (r < 0) fail(-r, 'fchownat', pathOf());
    if (entryAcls?.access) setAcl(pathOf(), ACL_ACCESS, entryAcls.access);
    if (entryAcls?.default) setAcl(pathOf(), ACL_DEFAULT, entryAcls.default);
    if (restoreMode >= 0) {
      const m = sys.fchmodat(dirFd, nameBuf, restoreMode);
      if (m < 0 && m !== -ENOENT) fail(-m, 'fchmodat', pathOf());
    }
  }

  function setAcl(path: string, attr: string, value: Uint8Array): void {
    const r = sys.lsetxattr(bytes(path), attr, value);
    if (r < 0 && r !== -ENOENT) fail(-r, 'lsetxattr', path);
  }

  function apply(): void {
    let sinceBatch = 0;
    let done = 0;
    let openIndex = -1;
    let dirFd = -1;
    try {
      for (let i = 0; i < stored; i++) {
        const parent = parents[i]!;
        if (parent !== openIndex) {
          if (dirFd >= 0) sys.close(dirFd);
          openIndex = parent;
          dirFd = sys.openDir(bytes(dirPaths[parent]!));
          if (dirFd < 0 && dirFd !== -ENOENT && dirFd !== -ENOTDIR && dirFd !== -ELOOP) fail(-dirFd, 'open', dirPaths[parent]!);
        }
        // Entries of a directory that vanished since the scan have nothing left to shift.
        if (dirFd < 0) continue;
        const start = nameStarts[i]!;
        let len = 0;
        for (let b = arena[start]!; b !== 0; b = arena[start + ++len]!) nameBuf[len] = b;
        nameBuf[len] = 0;
        chownOne(dirFd, dirPaths[parent]!, len, uids[i]! + data.uidOffset, gids[i]! + data.gidOffset, restoreModeOf(modes[i]!), acls.size === 0 ? undefined : acls.get(i));
        if (++sinceBatch >= data.batch) {
          done += sinceBatch;
          port.postMessage({ t: 'progress', done: sinceBatch } satisfies FromWalker);
          sinceBatch = 0;
          if (Atomics.load(control, CANCELLED)) break;
        }
      }
    } finally {
      if (dirFd >= 0) sys.close(dirFd);
    }
    done += sinceBatch;
    if (sinceBatch > 0) port.postMessage({ t: 'progress', done: sinceBatch } satisfies FromWalker);
    port.postMessage({ t: 'applied', done } satisfies FromWalker);
  }

  function applyList(items: ListItem[]): void {
    const AT_FDCWD = -100;
    for (const item of items) {
      // Longer than PATH_MAX: the kernel would refuse it anyway; never chown a truncated path.
      if (item.path.length >= nameBuf.length) fail(constants.errno.ENAMETOOLONG, 'fchownat', item.path);
      const len = nameBuf.write(item.path, 0, 'latin1');
      nameBuf[len] = 0;
      // Absolute paths: '' as the directory makes the name the whole path.
      chownOne(AT_FDCWD, '', len, item.uid, item.gid, item.restoreMode, item.acl ? { access: item.acl } : undefined);
    }
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
      if (!(err instanceof Reported)) port.postMessage({ t: 'error', message: String(err) } satisfies FromWalker);
    }
  });
}
