/**
 * Start: the legacy single-key table migrated to one record per container, then what crashes
 * left behind released (attempts that never finished, claims no live record explains) and the
 * hint loaded from the claims.
 */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { REMOVE } from '@sysbox-mgr-ts/kv-state';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { Claims } from './claims.js';
import { isAlreadyExists } from './errors.js';
import { forEachLimited } from './for-each-limited.js';
import { SCAN_CONCURRENCY, type Hint } from './hint.js';
import type { PoolBlocks } from './pool.js';
import { LEGACY_TABLE_KEY, type BlockClaim, type IdRecord, type SubidStores } from './subid-store.js';

export interface ReconcileReport {
  /** Allocations moved from the legacy single-key table. */
  migrated: number;
  /** Unfinished attempts older than `staleAttemptMs`, released. */
  staleAttempts: number;
  /** Claims no live record explains, deleted. */
  orphanClaims: number;
  /** Blocks held, as read. */
  claimedBlocks: number;
}

export function createReconcile(deps: {
  mode: 'shared' | 'exclusive';
  stores: SubidStores;
  geometry: PoolBlocks;
  hint: Hint;
  claims: Claims;
  log: Logger;
  now: () => Date;
  staleAttemptMs: number;
  newToken: () => string;
}): () => Promise<ReconcileReport> {
  const { mode, log, now, staleAttemptMs, newToken } = deps;
  const { ids, blocks, legacyTable } = deps.stores;
  const { blockCount, blockKey, blockOfKey, blocksOf, covers } = deps.geometry;
  const { markTaken, installHint } = deps.hint;
  const { claimBlock, claimIsLive } = deps.claims;

  /**
   * Whether a record this replica just created from the table it read at `tableRevision` may be
   * kept. A delete leaves no trace, so the create alone cannot tell a record never written from
   * one a replica that migrated first has freed since. Frees are served only after the table is
   * removed: while the table is still at the revision read, no free came before the create. Once
   * it is gone, the create may bring back a freed range, and is undone, unless the replica that
   * removed the table has finished the record (its claim moved the revision past `created`).
   */
  const stillMigrating = async (tableRevision: number, id: string, created: number): Promise<boolean> => {
    if ((await legacyTable.get(LEGACY_TABLE_KEY))?.revision === tableRevision) return true;
    try {
      await ids.delete(id, { revision: created });
      log.warn({ id }, 'the legacy table went while migrating it: did not bring back a range freed since');
      return false;
    } catch (err) {
      if (err instanceof SysboxError && err.code === 'failed-precondition') return true;
      throw err;
    }
  };

  /** Moves each allocation of the legacy table to its own record and claims, then removes the table. */
  const migrateLegacyTable = async (): Promise<number> => {
    const read = await legacyTable.get(LEGACY_TABLE_KEY);
    if (!read) return 0;
    const table = read.value;
    let migrated = 0;
    await forEachLimited(table.allocations, SCAN_CONCURRENCY, async (legacy) => {
      const { id, start, size, allocatedAt } = legacy;
      const record: IdRecord = { start, size, allocatedAt, token: newToken(), claimed: false };
      try {
        const created = await ids.create(id, record);
        if (!(await stillMigrating(read.revision, id, created))) return;
        migrated++;
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
      // Whoever created the record (this replica or one starting beside it) finishes it.
      const stored = (await ids.get(id))?.value;
      if (!stored || stored.claimed) return;
      if (mode === 'exclusive') {
        for (const block of blocksOf(stored)) {
          if (await claimBlock(id, stored.token, block)) markTaken(block);
          else
            log.warn(
              { id, range: { start, size }, block: blockKey(block) },
              'migrated range overlaps another recorded range',
            );
        }
      }
      await ids.mutate(id, (current) =>
        current?.token === stored.token && !current.claimed ? { ...current, claimed: true } : undefined,
      );
    });
    await legacyTable.mutate(LEGACY_TABLE_KEY, (current) => (current ? REMOVE : undefined));
    log.info(
      { migrated, inTable: table.allocations.length },
      'migrated the legacy allocation table to one key per container',
    );
    return migrated;
  };

  /**
   * Releases attempts that never finished and claims no live record explains. Records that the
   * migration creates are never judged here while another replica migrates: the table goes only
   * after every record in it is claimed, and a replica reaches this only past its own migration.
   */
  const releaseLeftovers = async (): Promise<Omit<ReconcileReport, 'migrated'>> => {
    let staleAttempts = 0;
    const staleBefore = now().getTime() - staleAttemptMs;
    /** Tokens of the records read: claims that match need no second look. */
    const tokens = new Map<string, IdRecord>();
    await forEachLimited(await ids.keys(), SCAN_CONCURRENCY, async (id) => {
      const record = (await ids.get(id))?.value;
      if (record) tokens.set(id, record);
      if (!record || record.claimed || Date.parse(record.allocatedAt) > staleBefore) return;
      let removed = false;
      await ids.mutate(id, (current) => {
        removed = current?.token === record.token && !current.claimed;
        return removed ? REMOVE : undefined;
      });
      if (removed) {
        tokens.delete(id);
        staleAttempts++;
        log.warn({ id, record }, 'released an allocation attempt that never finished');
      }
    });
    let orphanClaims = 0;
    const live = new Uint8Array(blockCount);
    await forEachLimited(await blocks.keys(), SCAN_CONCURRENCY, async (key) => {
      const block = blockOfKey(key);
      const seen = (await blocks.get(key))?.value;
      // A claim off the pool's grid can hold nothing a new allocation would take: leave it.
      if (!seen || block === undefined) return;
      live[block] = 1;
      const owner = tokens.get(seen.id);
      if (owner?.token === seen.token && covers(owner, block)) return;
      // Judged again on fresh reads: the record may be newer than the pass over records.
      if (await claimIsLive(seen, block)) return;
      let deleted: BlockClaim | undefined;
      await blocks.mutate(key, async (claim) => {
        deleted = claim !== undefined && !(await claimIsLive(claim, block)) ? claim : undefined;
        return deleted ? REMOVE : undefined;
      });
      if (deleted) {
        live[block] = 0;
        orphanClaims++;
        log.warn({ block: key, claim: deleted }, 'deleted an orphaned block claim');
      }
    });
    return { staleAttempts, orphanClaims, claimedBlocks: installHint(live) };
  };

  let reconciling: Promise<ReconcileReport> | undefined;
  const reconcile = (): Promise<ReconcileReport> =>
    (reconciling ??= (async () => {
      const migrated = await migrateLegacyTable();
      if (mode === 'shared') return { migrated, staleAttempts: 0, orphanClaims: 0, claimedBlocks: 0 };
      return { migrated, ...(await releaseLeftovers()) };
    })().catch((err: unknown) => {
      reconciling = undefined;
      throw err;
    }));

  return reconcile;
}
