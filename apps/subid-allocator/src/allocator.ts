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
  type SubidSummaryReply,
} from '@sysbox-mgr-ts/contracts';
import { REMOVE } from '@sysbox-mgr-ts/kv-state';
import { createKeyedLock, silentLogger, type Logger } from '@sysbox-mgr-ts/service-kit';
import { createClaims } from './claims.js';
import { isAlreadyExists } from './errors.js';
import { createHint } from './hint.js';
import { poolBlocks } from './pool.js';
import { createReconcile, type ReconcileReport } from './start.js';
import type { IdRecord, SubidStores } from './subid-store.js';

export type { ReconcileReport } from './start.js';

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

export interface SubidAllocator extends SubidAlloc {
  /**
   * Migrates a legacy table, releases what crashes left behind and loads the hint. Runs once;
   * every other call waits for it, and `main` calls it at start to log the report.
   */
  reconcile(): Promise<ReconcileReport>;
  /** Counts from the stores' keys (one request each, no record read): for a fleet inventory. */
  summary(): Promise<SubidSummaryReply>;
}

export function createSubidAlloc(opts: SubidAllocOptions): SubidAllocator {
  const { mode, pool } = opts;
  const { ids, blocks } = opts.stores;
  const now = opts.now ?? (() => new Date());
  const maxListBytes = opts.maxListBytes ?? 900 * 1024;
  const staleAttemptMs = opts.staleAttemptMs ?? 60_000;
  const log = opts.log ?? silentLogger();
  const geometry = poolBlocks(pool);
  const { blocksOf } = geometry;
  const hint = createHint(pool, geometry, blocks);
  const { markTaken, reserveRun, settle } = hint;
  const claims = createClaims({ ids, blocks, geometry, log, markFree: hint.markFree });
  const { claimBlock, releaseQuietly } = claims;

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

  const reconcile = createReconcile({
    mode,
    stores: opts.stores,
    geometry,
    hint,
    claims,
    log,
    now,
    staleAttemptMs,
    newToken,
  });

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
    async summary() {
      await reconcile();
      const [idKeys, blockKeys] = await Promise.all([ids.keys(), mode === 'exclusive' ? blocks.keys() : []]);
      return {
        mode,
        pool: { uid: pool.start, gid: pool.start, size: pool.size },
        allocations: idKeys.length,
        ...(mode === 'exclusive' ? { idsClaimed: blockKeys.length * SUBID_BLOCK } : {}),
      };
    },
  };
}
