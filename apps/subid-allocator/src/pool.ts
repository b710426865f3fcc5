/** The pool's geometry: its blocks, their keys, and which blocks a range touches. */
import { SUBID_BLOCK, SysboxError } from '@sysbox-mgr-ts/contracts';

export interface Pool {
  start: number;
  size: number;
}

export interface PoolBlocks {
  blockCount: number;
  /** The claim key of a block: its first id. */
  blockKey(block: number): string;
  /** The block a claim key names; undefined off the pool's grid. */
  blockOfKey(key: string): number | undefined;
  /** The pool blocks a range touches: a range recorded before the pool moved may straddle two. */
  blocksOf(r: { start: number; size: number }): number[];
  covers(r: { start: number; size: number }, block: number): boolean;
}

export function poolBlocks(pool: Pool): PoolBlocks {
  if (pool.size < SUBID_BLOCK || pool.size % SUBID_BLOCK !== 0 || pool.start + pool.size - 1 > 2 ** 32 - 2) {
    throw new SysboxError(
      'invalid-request',
      `pool ${pool.start}+${pool.size} must be a multiple of ${SUBID_BLOCK} ids within 32 bits`,
    );
  }
  const blockCount = pool.size / SUBID_BLOCK;
  const blockKey = (block: number): string => String(pool.start + block * SUBID_BLOCK);
  const blockOfKey = (key: string): number | undefined => {
    const offset = Number(key) - pool.start;
    const block = offset / SUBID_BLOCK;
    return Number.isInteger(block) && block >= 0 && block < blockCount ? block : undefined;
  };
  const blocksOf = (r: { start: number; size: number }): number[] => {
    const first = Math.max(0, Math.floor((r.start - pool.start) / SUBID_BLOCK));
    const end = Math.min(blockCount, Math.ceil((r.start + r.size - pool.start) / SUBID_BLOCK));
    return Array.from({ length: Math.max(0, end - first) }, (_, i) => first + i);
  };
  const covers = (r: { start: number; size: number }, block: number): boolean => {
    const blockStart = pool.start + block * SUBID_BLOCK;
    return r.start < blockStart + SUBID_BLOCK && blockStart < r.start + r.size;
  };
  return { blockCount, blockKey, blockOfKey, blocksOf, covers };
}
