/**
 * Reference-counted shiftfs marks, shared by every replica of this node through one KV record
 * per source path.
 *
 * Ordering: a replica first claims the source in KV (a CAS create, state `mounting`), then makes
 * the markpoint dir and mounts, then commits `mounted`. Claiming first means every mount we make
 * has a record made before it, so a crash at any point leaves something reconcile can find and
 * undo; and since only one create can win, concurrent marks of one source mount once. The last
 * holder moves the record to `unmounting` before it unmounts, so no new claim can stack a mount
 * on a markpoint that is being torn down. Records stuck in `mounting`/`unmounting` longer than
 * any mount call can take were abandoned by a crashed replica; whoever meets them first (a
 * waiting mark, reconcile, unmark-all) takes them over with CAS and tears them down.
 */
import { createHash, randomUUID } from 'node:crypto';
import { chmod, mkdir, readdir, realpath, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  SysboxError,
  type MarkInfo,
  type ShiftfsMgr,
  type ShiftfsMount,
  type shiftfsUnmarkAll,
} from '@sysbox-mgr-ts/contracts';
import { assertNotSystemDir } from '@sysbox-mgr-ts/host-guard';
import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { z } from 'zod';
import type { MarkRecord } from './mark-store.js';
import { MOUNTER_TIMEOUT_MS, type Mounter } from './mounter.js';
import type { ShiftfsProbe } from './probe.js';

export type UnmarkAllReply = z.infer<typeof shiftfsUnmarkAll.reply>;

export interface ShiftfsMarksDeps {
  store: StateStore<MarkRecord>;
  mounter: Mounter;
  /** /proc/self/mountinfo by default; injected so tests can show mounts made by "someone else". */
  readMounts: () => Promise<MountEntry[]>;
  /** `<data-root>/shiftfs`: parent of the uuid markpoints. */
  workDir: string;
  /** Sources may not be it or hold it (nor be a system dir). */
  dataRoot: string;
  probe: ShiftfsProbe;
  log: Logger;
  now?: () => number;
  /** A `mounting`/`unmounting` record older than this was abandoned by a crashed replica. */
  staleAfterMs?: number;
  /** How long a mark waits for another replica's claim on the same source to settle. */
  waitTimeoutMs?: number;
  pollMs?: number;
}

export interface DroppedMark {
  source: string;
  markpoint: string;
  holders: string[];
  reason: string;
}

export interface ReconcileReport {
  kept: number;
  dropped: DroppedMark[];
  /** Empty uuid markpoint dirs that no record named. */
  removedDirs: string[];
}

export interface ShiftfsMarks extends ShiftfsMgr {
  mark(id: string, mounts: ShiftfsMount[], createMarkpoint: boolean, log?: Logger): Promise<ShiftfsMount[]>;
  unmark(id: string, mounts: ShiftfsMount[], log?: Logger): Promise<void>;
  unmarkAll(log?: Logger): Promise<UnmarkAllReply>;
  list(): Promise<MarkInfo[]>;
  /** At start: drop marks whose mount is gone, tear down abandoned claims; returns what changed. */
  reconcile(): Promise<ReconcileReport>;
}

/** Record key of a source: a hash, because a 4096-byte path escaped into a subject is too long. */
export function markKey(source: string): string {
  return createHash('sha256').update(source).digest('hex').slice(0, 40);
}

function hasShiftfsAt(mounts: readonly MountEntry[], path: string): boolean {
  return mountsAt(mounts, path).some((m) => m.fsType === 'shiftfs');
}

function publicInfo(rec: MarkRecord): MarkInfo {
  const { claimId: _claimId, since: _since, ...info } = rec;
  return info;
}

async function removeMarkpointDir(path: string): Promise<void> {
  try {
    // rmdir, never a recursive delete: if the mark were still mounted this fails instead of
    // deleting the source's files through it.
    await rmdir(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

const UUID_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Makes `<data-root>/shiftfs` (0710) if missing; answers its real path, resolved once because
 * markpoints are stored as mountinfo shows them.
 */
export async function makeWorkDir(path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: 0o710 });
  return realpath(path);
}

export async function createShiftfsMarks(deps: ShiftfsMarksDeps): Promise<ShiftfsMarks> {
  const { store, mounter, readMounts, probe } = deps;
  const now = deps.now ?? Date.now;
  const staleAfterMs = deps.staleAfterMs ?? 3 * MOUNTER_TIMEOUT_MS;
  const waitTimeoutMs = deps.waitTimeoutMs ?? MOUNTER_TIMEOUT_MS + 5_000;
  const pollMs = deps.pollMs ?? 20;
  const workDir = await makeWorkDir(deps.workDir);
  const stamp = (): string => new Date(now()).toISOString();
  const isStale = (rec: MarkRecord): boolean => now() - Date.parse(rec.since) > staleAfterMs;
  /**
   * Which record holds a markpoint, as this replica last saw it: a hint that spares unmark a
   * full listing. A markpoint names one claim only, so a hint is either right or its record is
   * gone; every hint is checked against the record before use.
   */
  const keyByMarkpoint = new Map<string, string>();

  /** The key of the record whose markpoint this is: the hint, the source itself, then a listing. */
  async function findMarkKey(markpoint: string): Promise<string | undefined> {
    const hinted = keyByMarkpoint.get(markpoint);
    for (const key of [hinted, markKey(markpoint)]) {
      if (key === undefined) continue;
      if ((await store.get(key))?.value.markpoint === markpoint) return key;
    }
    if (hinted !== undefined) keyByMarkpoint.delete(markpoint);
    const listed = (await store.list()).find((r) => r.value.markpoint === markpoint);
    if (listed) keyByMarkpoint.set(markpoint, listed.key);
    return listed?.key;
  }

  /**
   * KV can be written by others: a record's markpoint is only unmounted or removed when it is
   * one we make (a dir right under the work dir) or the source itself, as a mark without a
   * markpoint has it.
   */
  function checkMarkpoint(rec: MarkRecord, log: Logger): void {
    const ours = rec.createdMarkpoint ? dirname(rec.markpoint) === workDir : rec.markpoint === rec.source;
    if (!ours) {
      log.error({ record: rec, workDir }, 'mark record names a markpoint we never make: refused');
      throw new SysboxError(
        'internal',
        `mark record of ${rec.source} names markpoint ${rec.markpoint}, which is not ours: refusing to unmount it`,
      );
    }
  }

  /** Unmounts (if still mounted), removes a uuid markpoint, then the record; it must be `unmounting`. */
  async function teardown(key: string, rec: MarkRecord, log: Logger): Promise<void> {
    checkMarkpoint(rec, log);
    if (hasShiftfsAt(await readMounts(), rec.markpoint)) await mounter.unmount(rec.markpoint);
    if (rec.createdMarkpoint) await removeMarkpointDir(rec.markpoint);
    await store.mutate(key, (cur) =>
      cur?.claimId === rec.claimId && cur.state === 'unmounting' ? REMOVE : undefined,
    );
    keyByMarkpoint.delete(rec.markpoint);
    log.info({ source: rec.source, markpoint: rec.markpoint }, 'shiftfs mark removed');
  }

  /** Takes a record over (CAS on its claim and state) and tears it down; false when it changed meanwhile. */
  async function takeOverAndTeardown(key: string, seen: MarkRecord, log: Logger): Promise<boolean> {
    let took = false;
    const taken = await store.mutate(key, (cur) => {
      took = false;
      if (!cur || cur.claimId !== seen.claimId || cur.state !== seen.state || cur.since !== seen.since)
        return undefined;
      took = true;
      return { ...cur, holders: [], state: 'unmounting', since: stamp() };
    });
    if (!took || !taken) return false;
    await teardown(key, taken, log);
    return true;
  }

  /** Drops `id` from the mark at `markpoint`; the last holder unmounts. Unknown marks and ids are no-ops. */
  async function releaseHold(id: string, key: string, markpoint: string, log: Logger): Promise<void> {
    let emptied = false;
    const after = await store.mutate(key, (cur) => {
      emptied = false;
      if (!cur || cur.markpoint !== markpoint || cur.state !== 'mounted' || !cur.holders.includes(id))
        return undefined;
      const holders = cur.holders.filter((h) => h !== id);
      if (holders.length > 0) return { ...cur, holders };
      emptied = true;
      return { ...cur, holders, state: 'unmounting', since: stamp() };
    });
    if (emptied && after) {
      try {
        await teardown(key, after, log);
      } catch (err) {
        throw new SysboxError(
          'internal',
          `unmark of ${markpoint} failed; the mark stays in state unmounting and is retried by unmark-all or after ${staleAfterMs} ms: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  }

  /** Claims the source, makes the markpoint, mounts, commits; undoes its own steps on failure. */
  async function claimAndMount(
    id: string,
    key: string,
    source: string,
    createMarkpoint: boolean,
    log: Logger,
  ): Promise<string | undefined> {
    const claimId = randomUUID();
    const markpoint = createMarkpoint ? join(workDir, randomUUID()) : source;
    const claim: MarkRecord = {
      source,
      markpoint,
      createdMarkpoint: createMarkpoint,
      holders: [id],
      state: 'mounting',
      markedAt: stamp(),
      since: stamp(),
      claimId,
    };
    try {
      await store.create(key, claim);
    } catch (err) {
      if (err instanceof SysboxError && err.code === 'already-exists') return undefined;
      throw err;
    }
    try {
      if (createMarkpoint) {
        await mkdir(markpoint, { mode: 0o700 });
        // mkdir's mode passes through the umask; the markpoint must be exactly root-only.
        await chmod(markpoint, 0o700);
      }
      await mounter.mark(source, markpoint);
    } catch (err) {
      await removeMarkpointDir(markpoint).catch((e: unknown) =>
        log.warn({ err: e, markpoint }, 'markpoint not removed'),
      );
      await store
        .mutate(key, (cur) => (cur?.claimId === claimId && cur.state === 'mounting' ? REMOVE : undefined))
        .catch((e: unknown) => log.warn({ err: e, source }, 'claim not released; reconcile will'));
      throw err;
    }
    const committed = await store.mutate(key, (cur) =>
      cur?.claimId === claimId && cur.state === 'mounting'
        ? { ...cur, state: 'mounted', since: stamp() }
        : undefined,
    );
    if (committed?.claimId !== claimId || committed.state !== 'mounted') {
      // Someone judged our claim abandoned and took it over; the mount is theirs to remove now.
      throw new SysboxError('unavailable', `the mark of ${source} was taken over while mounting; retry`);
    }
    log.info({ source, markpoint, id }, 'shiftfs mark mounted');
    return markpoint;
  }

  /** One source: join its mark, skip it when someone else marked it, or claim and mount it. */
  async function markOne(
    id: string,
    source: string,
    createMarkpoint: boolean,
    log: Logger,
  ): Promise<{ markpoint: string; joinedByThisCall: boolean; tracked: boolean }> {
    const key = markKey(source);
    const deadline = now() + waitTimeoutMs;
    for (;;) {
      const found = await store.get(key);
      if (found && found.value.state === 'mounted') {
        let added = false;
        const after = await store.mutate(key, (cur) => {
          added = false;
          if (!cur || cur.state !== 'mounted' || cur.holders.includes(id)) return undefined;
          added = true;
          return { ...cur, holders: [...cur.holders, id] };
        });
        if (after?.state === 'mounted' && after.holders.includes(id)) {
          keyByMarkpoint.set(after.markpoint, key);
          return { markpoint: after.markpoint, joinedByThisCall: added, tracked: true };
        }
        continue;
      }
      if (found) {
        if (isStale(found.value)) {
          log.warn(
            { source, state: found.value.state, since: found.value.since },
            'taking over an abandoned shiftfs claim',
          );
          await takeOverAndTeardown(key, found.value, log);
          continue;
        }
        if (now() > deadline) {
          throw new SysboxError(
            'unavailable',
            `${source} is being ${found.value.state === 'mounting' ? 'marked' : 'unmarked'} by another request; retry`,
          );
        }
        await sleep(pollMs);
        continue;
      }
      if (hasShiftfsAt(await readMounts(), source)) {
        log.debug({ source }, 'shiftfs already mounted there by someone else; not tracked');
        return { markpoint: source, joinedByThisCall: false, tracked: false };
      }
      const markpoint = await claimAndMount(id, key, source, createMarkpoint, log);
      if (markpoint !== undefined) {
        keyByMarkpoint.set(markpoint, key);
        return { markpoint, joinedByThisCall: true, tracked: true };
      }
    }
  }

  async function resolveSources(
    mounts: readonly ShiftfsMount[],
    createMarkpoint: boolean,
  ): Promise<string[]> {
    return Promise.all(
      mounts.map(async ({ source }) => {
        let real: string;
        try {
          real = await realpath(source);
          if (!(await stat(real)).isDirectory()) throw new Error('not a directory');
        } catch (err) {
          throw new SysboxError(
            'invalid-request',
            `mark: source ${source} is not a directory: ${(err as Error).message}`,
          );
        }
        // A mark changes no ownership, and one on a separate root-only markpoint (what the
        // gateway always asks, as upstream's sysbox-mgr does) exposes the source to no one but
        // the container that mounts it: every directory is marked, system dirs included (the
        // kernel headers and modules ReqMounts returns, /run for a socket, /etc for a file), as
        // upstream. A mark in place would let any user's own user namespace mount shiftfs over
        // the source, so that one keeps host-guard's system-dir refusal.
        return createMarkpoint
          ? real
          : assertNotSystemDir(real, { dataRoot: deps.dataRoot, what: 'in-place mark source' });
      }),
    );
  }

  return {
    async mark(id, mounts, createMarkpoint, log = deps.log) {
      // Refused only where shiftfs cannot mount at all: with the functional check failed or
      // skipped, whether to mark is the runtime's call (the gateway's ShiftfsOk), as upstream.
      if (!probe.inKernel) {
        throw new SysboxError('unsupported', `shiftfs mark refused: ${probe.reason}`);
      }
      const sources = await resolveSources(mounts, createMarkpoint);
      const joined: { key: string; markpoint: string }[] = [];
      const out: ShiftfsMount[] = [];
      try {
        for (const [i, requested] of mounts.entries()) {
          const r = await markOne(id, sources[i]!, createMarkpoint, log);
          if (r.joinedByThisCall) joined.push({ key: markKey(sources[i]!), markpoint: r.markpoint });
          // An untracked source is answered as the caller spelled it, as upstream does.
          out.push({ source: r.tracked ? r.markpoint : requested.source, readonly: requested.readonly });
        }
      } catch (err) {
        // All or nothing: drop the holds this call took, so a failed mark leaves no reference behind.
        for (const { key, markpoint } of joined.reverse()) {
          await releaseHold(id, key, markpoint, log).catch((e: unknown) =>
            log.warn({ err: e, markpoint }, 'rollback of a partial mark failed'),
          );
        }
        throw err;
      }
      return out;
    },

    async unmark(id, mounts, log = deps.log) {
      for (const { source: markpoint } of mounts) {
        const key = await findMarkKey(markpoint);
        if (key === undefined) {
          log.debug({ markpoint }, 'unmark: not a tracked markpoint; nothing to do');
          continue;
        }
        await releaseHold(id, key, markpoint, log);
      }
    },

    async unmarkAll(log = deps.log) {
      const reply: UnmarkAllReply = { unmarked: [], failures: [] };
      for (const { key, value: rec } of await store.list()) {
        if (rec.state !== 'mounted' && !isStale(rec)) {
          reply.failures.push({ markpoint: rec.markpoint, error: `another request is ${rec.state} it` });
          continue;
        }
        try {
          if (await takeOverAndTeardown(key, rec, log)) reply.unmarked.push(rec.markpoint);
          else
            reply.failures.push({ markpoint: rec.markpoint, error: 'changed by another request meanwhile' });
        } catch (err) {
          log.warn({ err, markpoint: rec.markpoint }, 'unmark-all: unmount failed');
          reply.failures.push({ markpoint: rec.markpoint, error: (err as Error).message });
        }
      }
      return reply;
    },

    async list() {
      return (await store.list()).map((r) => publicInfo(r.value));
    },

    async reconcile() {
      const log = deps.log;
      // Order matters with live replicas: a markpoint dir is made only after its record, and a
      // record turns `mounted` only after its mount. So a dir seen before the listing has its
      // record in the listing, and a mount committed before the listing is in mountinfo read after.
      const dirsBefore = await readdir(workDir);
      const records = await store.list();
      const mounts = await readMounts();
      const report: ReconcileReport = { kept: 0, dropped: [], removedDirs: [] };
      for (const { key, value: rec } of records) {
        if (rec.state === 'mounted' && hasShiftfsAt(mounts, rec.markpoint)) {
          report.kept++;
          continue;
        }
        if (rec.state === 'mounted') {
          let removed = false;
          await store.mutate(key, (cur) => {
            removed = cur?.claimId === rec.claimId && cur.state === 'mounted';
            return removed ? REMOVE : undefined;
          });
          if (!removed) continue;
          if (rec.createdMarkpoint) {
            await removeMarkpointDir(rec.markpoint).catch((err: unknown) =>
              log.warn({ err, markpoint: rec.markpoint }, 'markpoint of a dropped mark not removed'),
            );
          }
          const dropped = {
            source: rec.source,
            markpoint: rec.markpoint,
            holders: rec.holders,
            reason: 'mount is gone from mountinfo',
          };
          log.warn(dropped, 'dropped a shiftfs mark whose mount is gone');
          report.dropped.push(dropped);
        } else if (isStale(rec)) {
          if (await takeOverAndTeardown(key, rec, log)) {
            const dropped = {
              source: rec.source,
              markpoint: rec.markpoint,
              holders: rec.holders,
              reason: `abandoned while ${rec.state}`,
            };
            log.warn(dropped, 'tore down an abandoned shiftfs claim');
            report.dropped.push(dropped);
          }
        } else {
          report.kept++;
        }
      }
      // Empty uuid dirs no record names: left by a crash between dropping a record and its rmdir.
      const referenced = new Set(records.map((r) => r.value.markpoint));
      for (const name of dirsBefore.filter((n) => UUID_NAME.test(n))) {
        const path = join(workDir, name);
        if (referenced.has(path) || mountsAt(mounts, path).length > 0) continue;
        try {
          await rmdir(path);
          report.removedDirs.push(path);
        } catch (err) {
          log.warn({ err, path }, 'stray markpoint dir not removed');
        }
      }
      if (report.removedDirs.length > 0)
        log.warn({ dirs: report.removedDirs }, 'removed stray markpoint dirs');
      return report;
    },
  };
}
