/**
 * Shifting the ownership of a tree by a uid/gid offset (sysbox-libs' ShiftIdsWithChown, rebuilt).
 *
 * Two phases over a pool of walker threads: a scan that stats every entry once (and reads its ACL
 * xattrs) and keeps what it saw, then, only if every shifted owner and ACL qualifier is in range,
 * an apply phase that chowns from what was kept. A bad offset therefore changes nothing, at no
 * extra stat.
 */
import { lstat, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, dirname, resolve } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { ALL_IDS, type IdRange, type ShiftOnly } from './syscalls.js';
import { openWalkPool, WalkerError, type WalkPool } from './walk-pool.js';
import type { HardLinkSeen, ListItem, RootEntry } from './walk-worker.js';

export interface ShiftLogger {
  info(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export interface ShiftOptions {
  /** Default false: do not descend into other mounts (st_dev differs from the root's). */
  crossMounts?: boolean;
  onProgress?: (entriesDone: number) => void;
  /** Gets a progress line every few seconds on long runs. */
  logger?: ShiftLogger;
  /** Cancels between batches; the shift then fails with 'timeout'. */
  signal?: AbortSignal;
  /** Walker threads; default: os.availableParallelism(). */
  workers?: number;
  /**
   * Default true: shift the ids named in POSIX ACLs too (one xattr listing per entry, see README).
   * Pass false only for trees known to carry no ACLs: it saves that call.
   */
  acls?: boolean;
  /** Milliseconds between progress log lines; default 5000. */
  logEveryMs?: number;
  /**
   * Move only the uids inside `uid` and the gids inside `gid` (owners and ACL qualifiers alike);
   * every other id, and every entry with nothing to move, is left as it is. Default: every id.
   * With `unfinishedIds(uidOffset, gidOffset)` it finishes a shift that was cut short.
   */
  only?: ShiftOnly;
}

export interface ShiftResult {
  /** Entries changed. */
  entries: number;
  /** Entries seen; those not changed had nothing to move (outside `only`, or already there). */
  scanned: number;
  ms: number;
}

/** Sorted, distinct. */
export interface IdScan {
  uids: number[];
  gids: number[];
  entries: number;
}

const MAX_ID = 2 ** 32 - 2;
/** One past the largest id: the end of a range that reaches the top. */
const ID_LIMIT = 2 ** 32;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const SETID_BITS = 0o6000;

export async function shift(
  root: string,
  uidOffset: number,
  gidOffset: number,
  opts: ShiftOptions = {},
): Promise<ShiftResult> {
  const started = performance.now();
  for (const [name, offset] of [
    ['uidOffset', uidOffset],
    ['gidOffset', gidOffset],
  ] as const) {
    if (!Number.isInteger(offset) || Math.abs(offset) > MAX_ID) {
      throw new SysboxError('invalid-request', `${name} must be an integer within ±${MAX_ID}, got ${offset}`);
    }
  }
  const only = opts.only ?? ALL_IDS;
  for (const [name, range] of [
    ['only.uid', only.uid],
    ['only.gid', only.gid],
  ] as const) {
    const [min, max] = range;
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || min > max || max > ID_LIMIT) {
      throw new SysboxError(
        'invalid-request',
        `${name} must be a range [min, max) within 0..${ID_LIMIT}, got [${min}, ${max})`,
      );
    }
  }
  const absRoot = resolve(root);
  const rootStat = await lstatOrNotFound(absRoot);
  throwIfAborted(opts.signal, 'before it started');
  if (uidOffset === 0 && gidOffset === 0) return { entries: 0, scanned: 0, ms: performance.now() - started };

  let scanned = 0;
  let done = 0;
  let phase = 'scan';
  const progress = startProgressLog(opts, absRoot, () => ({
    phase,
    entriesScanned: scanned,
    entriesDone: done,
  }));
  const pool = startPool(
    () =>
      openWalkPool({
        task: 'shift',
        ...devNumbers(rootStat.dev),
        crossMounts: opts.crossMounts ?? false,
        uidOffset,
        gidOffset,
        only,
        acls: opts.acls ?? true,
        workers: opts.workers ?? availableParallelism(),
        onProgress: (delta) => {
          if (phase === 'scan') {
            scanned += delta;
            return;
          }
          done += delta;
          opts.onProgress?.(done);
        },
      }),
    () => clearInterval(progress),
  );
  const cancel = (): void => pool.cancel();
  opts.signal?.addEventListener('abort', cancel);
  try {
    const scan = await pool.scan(rootEntry(absRoot));
    throwIfAborted(opts.signal, 'during the scan; nothing was changed');

    const overflow = scan.overflow;
    if (overflow) {
      throw new SysboxError(
        'invalid-request',
        `shifting ${absRoot} by ${uidOffset}:${gidOffset} would take an id out of 0..${MAX_ID}: ${overflow}; nothing was changed`,
      );
    }

    phase = 'apply';
    await pool.apply();
    await pool.applyList(hardLinkTargets(scan.hardLinks));
    throwIfAborted(
      opts.signal,
      'part way through; the tree is partly shifted (the same shift with only: unfinishedIds() finishes it)',
    );
    const result = { entries: done, scanned, ms: performance.now() - started };
    opts.logger?.debug?.({ root: absRoot, uidOffset, gidOffset, ...result }, 'id shift done');
    return result;
  } catch (err) {
    throw asSysboxError(err);
  } finally {
    opts.signal?.removeEventListener('abort', cancel);
    clearInterval(progress);
    await pool.close();
  }
}

/** Walker threads that fail to start are a typed error (after `undo`, if given). */
function startPool(open: () => WalkPool, undo?: () => void): WalkPool {
  try {
    return open();
  } catch (err) {
    undo?.();
    throw asSysboxError(err);
  }
}

export async function scanIds(
  root: string,
  opts: { crossMounts?: boolean; signal?: AbortSignal; workers?: number } = {},
): Promise<IdScan> {
  const absRoot = resolve(root);
  const rootStat = await lstatOrNotFound(absRoot);
  throwIfAborted(opts.signal, 'before it started');
  if (!rootStat.isDirectory()) return { uids: [rootStat.uid], gids: [rootStat.gid], entries: 1 };
  const pool = startPool(() =>
    openWalkPool({
      task: 'scan-ids',
      ...devNumbers(rootStat.dev),
      crossMounts: opts.crossMounts ?? false,
      uidOffset: 0,
      gidOffset: 0,
      only: ALL_IDS,
      acls: false,
      workers: opts.workers ?? availableParallelism(),
      onProgress: () => undefined,
    }),
  );
  const cancel = (): void => pool.cancel();
  opts.signal?.addEventListener('abort', cancel);
  try {
    const scan = await pool.scan(rootEntry(absRoot));
    throwIfAborted(opts.signal, 'during the scan');
    const ids = await pool.collect();
    return { uids: ids.uids, gids: ids.gids, entries: scan.scanned };
  } catch (err) {
    throw asSysboxError(err);
  } finally {
    opts.signal?.removeEventListener('abort', cancel);
    await pool.close();
  }
}

/** True when the path's own owner differs from uid:gid (the owner a container's root needs). */
export async function needsShift(source: string, uid: number, gid: number): Promise<boolean> {
  // stat, not lstat: a bind mount of a symlink mounts its target, whose owner is what counts.
  const st = await stat(source).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR')
      throw new SysboxError('not-found', `${source} does not exist`, { cause: err });
    throw SysboxError.from(err);
  });
  return st.uid !== uid || st.gid !== gid;
}

/**
 * The `only` filter that finishes a shift by uidOffset:gidOffset that was cut short (a kill, a
 * timeout): pass it to `shift` with the same offsets. It assumes the ids the tree had before that
 * shift lie below |offset| (a container's ids below 65536, offsets from subordinate ranges of at
 * least 65536). Then a shift by +d moves ids from [0, d) into [d, 2d) and its revert by -d moves
 * them back: source and target are disjoint, so an id still in the source range is one the walk
 * had not reached, an id in the target range one it had, and finishing again moves nothing.
 */
export function unfinishedIds(uidOffset: number, gidOffset: number): ShiftOnly {
  return { uid: sourceRange(uidOffset), gid: sourceRange(gidOffset) };
}

function sourceRange(offset: number): IdRange {
  return offset >= 0 ? [0, offset] : [-offset, Math.min(-2 * offset, ID_LIMIT)];
}

async function lstatOrNotFound(path: string) {
  return lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR')
      throw new SysboxError('not-found', `${path} does not exist`, { cause: err });
    throw SysboxError.from(err);
  });
}

/** The root as an entry of its parent, in the walkers' byte strings ("/" is "." in itself). */
function rootEntry(absRoot: string): RootEntry {
  const latin1 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');
  return absRoot === '/'
    ? { dir: '/', name: '.' }
    : { dir: latin1(dirname(absRoot)), name: latin1(basename(absRoot)) };
}

/** glibc's major()/minor() of the st_dev Node reports, to compare with statx's dev fields. */
function devNumbers(dev: number): { rootDevMajor: number; rootDevMinor: number } {
  const d = BigInt(dev);
  return {
    rootDevMajor: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)),
    rootDevMinor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)),
  };
}

function throwIfAborted(signal: AbortSignal | undefined, when: string): void {
  if (signal?.aborted) throw new SysboxError('timeout', `id shift cancelled ${when}`);
}

/** Every name of an inode gets the target computed from the first name seen, whatever it shows now. */
function hardLinkTargets(seen: readonly HardLinkSeen[]): ListItem[] {
  const first = new Map<string, { uid: number; gid: number }>();
  return seen.map((h) => {
    let owner = first.get(h.key);
    if (!owner) {
      owner = { uid: h.toUid, gid: h.toGid };
      first.set(h.key, owner);
    }
    return {
      path: h.path,
      uid: owner.uid,
      gid: owner.gid,
      restoreMode: restoreModeOf(h.mode),
      ...(h.acl ? { acl: h.acl } : {}),
    };
  });
}

function restoreModeOf(mode: number): number {
  return (mode & S_IFMT) === S_IFREG && (mode & SETID_BITS) !== 0 ? mode & 0o7777 : -1;
}

function startProgressLog(opts: ShiftOptions, root: string, state: () => object): NodeJS.Timeout {
  const started = performance.now();
  const timer = setInterval(() => {
    opts.logger?.info(
      { root, ...state(), ms: Math.round(performance.now() - started) },
      'id shift in progress',
    );
  }, opts.logEveryMs ?? 5000);
  timer.unref();
  return timer;
}

function asSysboxError(err: unknown): SysboxError {
  if (err instanceof SysboxError) return err;
  if (err instanceof WalkerError) {
    const code = err.code === 'ENOENT' ? 'not-found' : 'internal';
    return new SysboxError(code, `id shift failed at ${err.path ?? '?'}: ${err.message}`, { cause: err });
  }
  return SysboxError.from(err);
}

/**
 * The ids a shift by +uidOffset:+gidOffset gave a container of `size` ids. A revert moves only
 * these back: files the host or the runtime created meanwhile as a host user (root, say) are
 * left as they are instead of making the whole revert refuse. Finishing an interrupted revert with
 * it is harmless too: ids already moved back lie below the offsets.
 */
export function containerIds(uidOffset: number, gidOffset: number, size = 65536): ShiftOnly {
  return {
    uid: [uidOffset, Math.min(uidOffset + size, ID_LIMIT)],
    gid: [gidOffset, Math.min(gidOffset + size, ID_LIMIT)],
  };
}
