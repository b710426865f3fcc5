/**
 * Ending a mark: the last holder's release, a takeover of an abandoned claim, and the teardown
 * (unmount, markpoint dir, record) they lead to; plus finding a markpoint's record.
 */
import { dirname } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import type { MountEntry } from '@sysbox-mgr-ts/mountinfo';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { MarkRecord } from './mark-store.js';
import { hasShiftfsAt, markKey, removeMarkpointDir } from './markpoints.js';
import type { Mounter } from './mounter.js';

export interface MarkTeardown {
  /** Which record holds a markpoint, as this replica last saw it (see findMarkKey). */
  keyByMarkpoint: Map<string, string>;
  findMarkKey(markpoint: string): Promise<string | undefined>;
  takeOverAndTeardown(key: string, seen: MarkRecord, log: Logger): Promise<boolean>;
  releaseHold(id: string, key: string, markpoint: string, log: Logger): Promise<void>;
}

export function createMarkTeardown(deps: {
  store: StateStore<MarkRecord>;
  mounter: Mounter;
  readMounts: () => Promise<MountEntry[]>;
  workDir: string;
  staleAfterMs: number;
  stamp: () => string;
}): MarkTeardown {
  const { store, mounter, readMounts, workDir, staleAfterMs, stamp } = deps;
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

  return { keyByMarkpoint, findMarkKey, takeOverAndTeardown, releaseHold };
}
