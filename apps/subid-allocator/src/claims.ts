/**
 * Block claims: one key per pool block naming the container and the token of the attempt that
 * holds it. A claim is live while its container's record carries its token and covers its block.
 */
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import { REMOVE, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import type { PoolBlocks } from './pool.js';
import type { BlockClaim, IdRecord } from './subid-store.js';
import { isAlreadyExists } from './errors.js';

export interface Claims {
  claimIsLive(claim: BlockClaim, block: number): Promise<boolean>;
  claimBlock(id: string, token: string, block: number): Promise<boolean>;
  releaseClaims(id: string, token: string, run: readonly number[]): Promise<number[]>;
  releaseQuietly(id: string, token: string, run: readonly number[]): Promise<void>;
}

export function createClaims(deps: {
  ids: KvStateStore<IdRecord>;
  blocks: KvStateStore<BlockClaim>;
  geometry: PoolBlocks;
  log: Logger;
  markFree(block: number): void;
}): Claims {
  const { ids, blocks, log, markFree } = deps;
  const { blockKey, covers } = deps.geometry;
  /** A claim is live while its container's record carries its token and covers its block. */
  const claimIsLive = async (claim: BlockClaim, block: number): Promise<boolean> => {
    const owner = (await ids.get(claim.id))?.value;
    return owner !== undefined && owner.token === claim.token && covers(owner, block);
  };

  /** Claims one block for an attempt; false when a live claim of another container holds it. */
  const claimBlock = async (id: string, token: string, block: number): Promise<boolean> => {
    const key = blockKey(block);
    try {
      await blocks.create(key, { id, token });
      return true;
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
    }
    let heldByAnother = false;
    await blocks.mutate(key, async (claim) => {
      heldByAnother = false;
      if (claim === undefined) return { id, token };
      if (claim.id === id && claim.token === token) return undefined;
      // A live claim under another token of this same container means this attempt is stale:
      // it is refused like any other holder's, and the attempt's compare-and-set finds out.
      if (await claimIsLive(claim, block)) {
        heldByAnother = true;
        return undefined;
      }
      // Rewritten, not left as it is, even when it is this container's earlier attempt: the new
      // revision makes a reconcile that judged the old claim an orphan fail its delete.
      log.warn({ id, block: key, orphan: claim }, 'taking over an orphaned block claim');
      return { id, token };
    });
    return !heldByAnother;
  };

  /** Deletes an attempt's claims (compare-and-set: a claim rewritten since is kept). Answers the blocks it freed. */
  const releaseClaims = async (id: string, token: string, run: readonly number[]): Promise<number[]> => {
    const freed: number[] = [];
    await Promise.all(
      run.map(async (block) => {
        let ours = false;
        await blocks.mutate(blockKey(block), (claim) => {
          ours = claim !== undefined && claim.id === id && claim.token === token;
          return ours ? REMOVE : undefined;
        });
        if (ours) freed.push(block);
      }),
    );
    return freed;
  };

  /** Release where nothing depends on it: a failure leaves an orphan for a later claim or the reconcile. */
  const releaseQuietly = async (id: string, token: string, run: readonly number[]): Promise<void> => {
    try {
      for (const block of await releaseClaims(id, token, run)) markFree(block);
    } catch (err) {
      log.warn({ err, id }, 'could not release the claims of an abandoned attempt; the start reconcile will');
    }
  };

  return { claimIsLive, claimBlock, releaseClaims, releaseQuietly };
}
