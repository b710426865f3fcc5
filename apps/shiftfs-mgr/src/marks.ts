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
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  SysboxError,
  type MarkInfo,
  type ShiftfsMgr,
  type ShiftfsMount,
  type shiftfsUnmarkAll,
} from '@sysbox-mgr-ts/contracts';
import { assertNotSystemDir } from '@sysbox-mgr-ts/host-guard';
import { REMOVE, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import type { MountEntry } from '@sysbox-mgr-ts/mountinfo';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { z } from 'zod';
import type { MarkRecord } from './mark-store.js';
import { MOUNTER_TIMEOUT_MS, type Mounter } from './mounter.js';
import type { ShiftfsProbe } from './probe.js';
import { createMarkTeardown } from './mark-teardown.js';
import { hasShiftfsAt, makeWorkDir, markKey, removeMarkpointDir } from './markpoints.js';
import { reconcileMarks } from './marks-reconcile.js';

export { makeWorkDir, markKey } from './markpoints.js';

export type UnmarkAllReply = z.infer<typeof shiftfsUnmarkAll.reply>;

export interface ShiftfsMarksDeps {
  store: KvStateStore<MarkRecord>;
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
  /** How many marks: the store's keys, one request, no record read. */
  count(): Promise<number>;
  /** At start: drop marks whose mount is gone, tear down abandoned claims; returns what changed. */
  reconcile(): Promise<ReconcileReport>;
}

function publicInfo(rec: MarkRecord): MarkInfo {
  const { claimId: _claimId, since: _since, ...info } = rec;
  return info;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function createShiftfsMarks(deps: ShiftfsMarksDeps): Promise<ShiftfsMarks> {
  const { store, mounter, readMounts, probe } = deps;
  const now = deps.now ?? Date.now;
  const staleAfterMs = deps.staleAfterMs ?? 3 * MOUNTER_TIMEOUT_MS;
  const waitTimeoutMs = deps.waitTimeoutMs ?? MOUNTER_TIMEOUT_MS + 5_000;
  const pollMs = deps.pollMs ?? 20;
  const workDir = await makeWorkDir(deps.workDir);
  const stamp = (): string => new Date(now()).toISOString();
  const isStale = (rec: MarkRecord): boolean => now() - Date.parse(rec.since) > staleAfterMs;
  const { keyByMarkpoint, findMarkKey, takeOverAndTeardown, releaseHold } = createMarkTeardown({
    store,
    mounter,
    readMounts,
    workDir,
    staleAfterMs,
    stamp,
  });
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
    count: async () => (await store.keys()).length,

    reconcile: () =>
      reconcileMarks({ store, readMounts, workDir, log: deps.log, isStale, takeOverAndTeardown }),
  };
}
