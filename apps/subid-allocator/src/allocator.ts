/**
 * The subordinate id allocator (upstream intf.SubidAlloc), shared or exclusive, over per-key
 * state (see subid-store.ts): a container's record `id.<container>` and one claim key per block.
 *
 * Exclusive placement, in write order:
 *   1. create `id.<c>` = { range, token, claimed: false }  (the intent: it explains every claim after it)
 *   2. create `block.<b>` = { id: c, token } for each block of the range  (the ownership claims)
 *   3. update `id.<c>` to claimed: true, compare-and-set on its token  (only now is the range handed out)
 * A block already claimed by a live attempt of another container moves the attempt: a new token
 * and range (compare-and-set on the old token), then the old token's claims are released. A
 * process killed between any two writes leaves either an unclaimed record, which the next alloc
 * of that id carries on and the start reconcile releases once stale, or orphan claims (their
 * token is not their record's), which any claim attempt takes over and the start reconcile
 * deletes. Every deletion of a claim is a compare-and-set on the revision it judged, and taking
 * over a claim rewrites it, so a judgement made on an old claim never removes a new one.
 *
 * Latency does not depend on how many containers hold blocks: a fresh alloc is three writes, a
 * repeated one a read. Where to try is a hint kept in memory (which blocks this process saw
 * claimed); the claim itself is the create. Only when the hint finds no room does the process
 * read every claim key, and answer `exhausted` if there is still none.
 */
import { randomBytes } from 'node:crypto';
import {
  MAX_SUBID_SIZE,
  SUBID_BLOCK,
  SUBID_LIST_DEFAULT_LIMIT,
  SysboxError,
  type SubidAlloc,
  type SubidAllocReply,
  type SubidAllocation,
  type SubidListReply,
} from '@sysbox-mgr-ts/contracts';
import { REMOVE } from '@sysbox-mgr-ts/kv-state';
import { createKeyedLock, silentLogger, type Logger } from '@sysbox-mgr-ts/service-kit';
import { LEGACY_TABLE_KEY, type BlockClaim, type IdRecord, type SubidStores } from './subid-store.js';

export type SubidMode = 'shared' | 'exclusive';

export interface SubidAllocOptions {
  mode: SubidMode;
  pool: { start: number; size: number };
  stores: SubidStores;
  now?: () => Date;
  /** Largest encoded list reply, in bytes: the server's max_payload with headroom. */
  maxListBytes?: number;
  /**
   * Age after which the start reconcile releases a record whose claims never completed. Far
   * above one allocation (milliseconds), so it never races an allocator that is still running.
   */
  staleAttemptMs?: number;
  /** Where refused records and repairs are reported. */
  log?: Logger;
}

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

export interface SubidAllocator extends SubidAlloc {
  /**
   * Migrates a legacy table, releases what crashes left behind and loads the hint. Runs once;
   * every other call waits for it, and `main` calls it at start to log the report.
   */
  reconcile(): Promise<ReconcileReport>;
}

/** Parallel KV requests of one scan: enough to hide round trips, few enough to leave room for serving. */
const SCAN_CONCURRENCY = 64;
/** Reads of every claim before answering `exhausted` (see reserveRun). */
const EXHAUSTED_READS = 4;

export function createSubidAlloc(opts: SubidAllocOptions): SubidAllocator {
  const { mode, pool } = opts;
  const { ids, blocks, legacyTable } = opts.stores;
  const now = opts.now ?? (() => new Date());
  const maxListBytes = opts.maxListBytes ?? 900 * 1024;
  const staleAttemptMs = opts.staleAttemptMs ?? 60_000;
  const log = opts.log ?? silentLogger();
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
  /** The pool blocks a range touches: a range recorded before the pool moved may straddle two. */
  const blocksOf = (r: { start: number; size: number }): number[] => {
    const first = Math.max(0, Math.floor((r.start - pool.start) / SUBID_BLOCK));
    const end = Math.min(blockCount, Math.ceil((r.start + r.size - pool.start) / SUBID_BLOCK));
    return Array.from({ length: Math.max(0, end - first) }, (_, i) => first + i);
  };
  const covers = (r: { start: number; size: number }, block: number): boolean => {
    const blockStart = pool.start + block * SUBID_BLOCK;
    return r.start < blockStart + SUBID_BLOCK && blockStart < r.start + r.size;
  };

  const checkSize = (size: number): void => {
    if (size === 0 || size > MAX_SUBID_SIZE) {
      throw new SysboxError('invalid-size', `size ${size} is outside 1..${MAX_SUBID_SIZE}`);
    }
    if (size > pool.size)
      throw new SysboxError('invalid-size', `size ${size} exceeds the pool of ${pool.size} ids`);
    if (mode === 'exclusive' && size % SUBID_BLOCK !== 0) {
      throw new SysboxError(
        'invalid-size',
        `exclusive mode allocates multiples of ${SUBID_BLOCK} ids, not ${size}`,
      );
    }
  };

  /**
   * KV can be written by others: a recorded range is handed out only when it lies inside the
   * pool, so a forged record cannot give a container root or a host user's ids.
   */
  const outsidePool = (id: string, r: IdRecord): SysboxError | undefined => {
    if (r.start >= pool.start && r.start + r.size <= pool.start + pool.size) return undefined;
    log.error({ id, record: r, pool }, 'allocation record lies outside the pool: refused');
    return new SysboxError(
      'internal',
      `recorded range ${r.start}..${r.start + r.size - 1} of container ${id} lies outside the pool ${pool.start}..${pool.start + pool.size - 1}: refused`,
    );
  };

  const checkRecord = (id: string, r: IdRecord, size: number): void => {
    const refused = outsidePool(id, r);
    if (refused) throw refused;
    if (r.size !== size) {
      throw new SysboxError(
        'invalid-size',
        `container ${id} already holds ${r.size} ids at ${r.start}; free it before asking for ${size}`,
      );
    }
  };

  // ---- The hint: which blocks this process believes taken. Never trusted for safety. ----

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

  // ---- Claims. ----

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

  const newToken = (): string => randomBytes(9).toString('base64url');

  const newRecord = (run: readonly number[], size: number): IdRecord => ({
    start: pool.start + run[0]! * SUBID_BLOCK,
    size,
    allocatedAt: now().toISOString(),
    token: newToken(),
    claimed: false,
  });

  /** Creates the record, or answers the one already there (another replica was first). */
  const createOrRead = async (id: string, record: IdRecord): Promise<IdRecord | undefined> => {
    try {
      await ids.create(id, record);
      return record;
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      return (await ids.get(id))?.value;
    }
  };

  const allocExclusive = async (id: string, size: number): Promise<IdRecord> => {
    const count = size / SUBID_BLOCK;
    let record = (await ids.get(id))?.value;
    /** Blocks this call reserved in the hint for the attempt it is making. */
    let run: number[] = [];
    try {
      for (;;) {
        if (record === undefined) {
          settle(run, () => false);
          run = [];
          run = await reserveRun(count);
          const fresh = newRecord(run, size);
          record = await createOrRead(id, fresh);
          if (record?.token !== fresh.token) {
            settle(run, () => false);
            run = [];
          }
          continue;
        }
        checkRecord(id, record, size);
        if (record.claimed) {
          const held = blocksOf(record);
          settle(run, (block) => held.includes(block));
          run = [];
          return record;
        }
        // An attempt in progress: this call's, another replica's, or one a crash cut short.
        const attempt = record;
        const attemptBlocks = blocksOf(attempt);
        const claims = await Promise.all(attemptBlocks.map((block) => claimBlock(id, attempt.token, block)));
        const heldByAnother = attemptBlocks.filter((_, i) => !claims[i]);
        if (heldByAnother.length === 0) {
          for (const block of attemptBlocks) markTaken(block);
          record = await ids.mutate(id, (current) =>
            current?.token === attempt.token && !current.claimed ? { ...current, claimed: true } : undefined,
          );
        } else {
          for (const block of heldByAnother) markTaken(block);
          // Give the attempt up (compare-and-set on its token) and start afresh. The record goes
          // before the claims, so a crash in between leaves orphans, never a record whose
          // blocks are half released; and the claims go before the search for a new range, so
          // a pool that is nearly full is not held up by them.
          record = await ids.mutate(id, (current) =>
            current?.token === attempt.token && !current.claimed ? REMOVE : undefined,
          );
        }
        if (record?.token !== attempt.token) {
          settle(run, (block) => heldByAnother.includes(block));
          run = [];
          await releaseQuietly(
            id,
            attempt.token,
            attemptBlocks.filter((block) => !heldByAnother.includes(block)),
          );
        }
      }
    } finally {
      settle(run, () => false);
    }
  };

  const allocShared = async (id: string, size: number): Promise<IdRecord> => {
    const record =
      (await ids.get(id))?.value ??
      (await createOrRead(id, {
        start: pool.start,
        size,
        allocatedAt: now().toISOString(),
        token: newToken(),
        claimed: true,
      }));
    if (record === undefined)
      throw new SysboxError(
        'unavailable',
        `container ${id}'s record vanished while it was being allocated; retry`,
      );
    checkRecord(id, record, size);
    if (record.claimed) return record;
    // A record an exclusive-mode allocator left unfinished: in shared mode it needs no claims.
    const stored = await ids.mutate(id, (current) =>
      current && !current.claimed ? { ...current, claimed: true } : undefined,
    );
    if (stored === undefined)
      throw new SysboxError(
        'unavailable',
        `container ${id}'s record vanished while it was being allocated; retry`,
      );
    return stored;
  };

  // ---- Start: migration and reconcile. ----

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

  // ---- One operation at a time per container id in this process. ----

  const serialized = createKeyedLock();

  const replyOf = (r: IdRecord): SubidAllocReply => ({ uid: r.start, gid: r.start, size: r.size });

  return {
    reconcile,
    async alloc(id, size) {
      checkSize(size);
      await reconcile();
      return replyOf(
        await serialized(id, () => (mode === 'shared' ? allocShared(id, size) : allocExclusive(id, size))),
      );
    },
    async free(id) {
      await reconcile();
      await serialized(id, async () => {
        let removed: IdRecord | undefined;
        await ids.mutate(id, (current) => {
          removed = current;
          return current ? REMOVE : undefined;
        });
        // The record goes first: a crash before the claims go leaves orphans, never a record
        // whose blocks someone else could take.
        if (removed && mode === 'exclusive') await releaseQuietly(id, removed.token, blocksOf(removed));
        if (!removed?.claimed) throw new SysboxError('not-found', `container ${id} holds no subid range`);
      });
    },
    async list(page = {}): Promise<SubidListReply> {
      await reconcile();
      const limit = page.limit ?? SUBID_LIST_DEFAULT_LIMIT;
      const reply: SubidListReply = {
        mode,
        pool: { uid: pool.start, gid: pool.start, size: pool.size },
        allocations: [],
      };
      // Room for `next`, a container id of up to 128 characters.
      let bytes = JSON.stringify(reply).length + 160;
      const keys = (await ids.keys()).filter((id) => page.cursor === undefined || id > page.cursor);
      let consumed = 0;
      pages: while (consumed < keys.length && reply.allocations.length < limit) {
        const chunk = keys.slice(consumed, consumed + limit - reply.allocations.length);
        const records = await Promise.all(chunk.map((id) => ids.get(id)));
        for (const [i, id] of chunk.entries()) {
          const record = records[i]?.value;
          if (record?.claimed && !outsidePool(id, record)) {
            const allocation: SubidAllocation = { id, ...replyOf(record), allocatedAt: record.allocatedAt };
            const size = JSON.stringify(allocation).length + 1;
            if (bytes + size > maxListBytes) break pages;
            reply.allocations.push(allocation);
            bytes += size;
          }
          consumed++;
        }
      }
      if (consumed < keys.length && consumed > 0) reply.next = keys[consumed - 1];
      return reply;
    },
  };
}

function isAlreadyExists(err: unknown): boolean {
  return err instanceof SysboxError && err.code === 'already-exists';
}

/** Runs `fn` over `items`, at most `limit` at a time. */
async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
