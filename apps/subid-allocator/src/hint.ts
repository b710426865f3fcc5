/**
 * The hint: which blocks this process believes taken, so that a fresh alloc tries a run that is
 * likely free without reading every claim. Never trusted for safety: the claim itself is the
 * create. Only when the hint has no room are all claims read again.
 */
import { SUBID_BLOCK, SysboxError } from '@sysbox-mgr-ts/contracts';
import type { KvStateStore } from '@sysbox-mgr-ts/kv-state';
import { forEachLimited } from './for-each-limited.js';
import type { Pool, PoolBlocks } from './pool.js';
import type { BlockClaim } from './subid-store.js';

/** Parallel KV requests of one scan: enough to hide round trips, few enough to leave room for serving. */
export const SCAN_CONCURRENCY = 64;
/** Reads of every claim before answering `exhausted` (see reserveRun). */
const EXHAUSTED_READS = 4;

export interface Hint {
  markTaken(block: number): void;
  markFree(block: number): void;
  /** Makes `live` (the claims just read) the hint, keeping this process's reservations; answers how many are claimed. */
  installHint(live: Uint8Array): number;
  /** Reserves the first run of `count` blocks that fits; `exhausted` when none does. */
  reserveRun(count: number): Promise<number[]>;
  /** Ends reservations: kept blocks stay taken in the hint, the others become free again. */
  settle(run: readonly number[], kept: (block: number) => boolean): void;
}

export function createHint(pool: Pool, geometry: PoolBlocks, blocks: KvStateStore<BlockClaim>): Hint {
  const { blockCount, blockOfKey } = geometry;
  /** 1: seen claimed, or reserved by an attempt of this process. */
  const taken = new Uint8Array(blockCount);
  /** Blocks reserved by attempts of this process that have not finished: a reload keeps them. */
  const reserved = new Set<number>();
  /** No block below it is free in the hint. */
  let searchFrom = 0;

  const markTaken = (block: number): void => {
    taken[block] = 1;
    while (searchFrom < blockCount && taken[searchFrom]) searchFrom++;
  };
  const markFree = (block: number): void => {
    taken[block] = 0;
    searchFrom = Math.min(searchFrom, block);
  };

  /** First fit in the hint: the first run of `count` blocks not seen taken. */
  const findRun = (count: number): number | undefined => {
    for (let first = searchFrom; first + count <= blockCount;) {
      let length = 0;
      while (length < count && !taken[first + length]) length++;
      if (length === count) return first;
      first += length + 1;
    }
    return undefined;
  };

  /** Makes `live` (the claims just read) the hint, keeping this process's reservations; answers how many are claimed. */
  const installHint = (live: Uint8Array): number => {
    const claimed = live.reduce((n, b) => n + b, 0);
    for (const block of reserved) live[block] = 1;
    taken.set(live);
    searchFrom = 0;
    while (searchFrom < blockCount && taken[searchFrom]) searchFrom++;
    return claimed;
  };

  let reloading: Promise<number> | undefined;
  /** Replaces the hint with the claims in KV (plus this process's reservations); answers how many are claimed. */
  const reloadHint = (): Promise<number> =>
    (reloading ??= (async () => {
      const live = new Uint8Array(blockCount);
      const keys = (await blocks.keys()).flatMap((key) => {
        const block = blockOfKey(key);
        return block === undefined ? [] : [{ key, block }];
      });
      await forEachLimited(keys, SCAN_CONCURRENCY, async ({ key, block }) => {
        if (await blocks.get(key)) live[block] = 1;
      });
      return installHint(live);
    })().finally(() => {
      reloading = undefined;
    }));

  /**
   * Reserves the first run that fits, reading every claim when the hint has no room. While
   * attempts of this process are in flight, it reads again after a pause (until two reads
   * agree): an attempt about to give up holds its blocks only for a moment, and `exhausted`
   * should mean that nothing fits, not that nothing fit during someone's roll-back.
   */
  const reserveRun = async (count: number): Promise<number[]> => {
    let first = findRun(count);
    let lastCount: number | undefined;
    for (let round = 0; first === undefined && round < EXHAUSTED_READS; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, 5 * 2 ** round));
      const claimed = await reloadHint();
      first = findRun(count);
      // Nothing in flight here and nothing moved since the last read: the answer stands.
      if (reserved.size === 0 && (lastCount === undefined || claimed === lastCount)) break;
      lastCount = claimed;
    }
    if (first === undefined) {
      throw new SysboxError(
        'exhausted',
        `no free range of ${count * SUBID_BLOCK} ids left in the pool ${pool.start}+${pool.size}`,
      );
    }
    const run = Array.from({ length: count }, (_, i) => first + i);
    for (const block of run) {
      reserved.add(block);
      markTaken(block);
    }
    return run;
  };

  /** Ends reservations: kept blocks stay taken in the hint, the others become free again. */
  const settle = (run: readonly number[], kept: (block: number) => boolean): void => {
    for (const block of run) {
      reserved.delete(block);
      if (!kept(block)) markFree(block);
    }
  };

  return { markTaken, markFree, installHint, reserveRun, settle };
}
