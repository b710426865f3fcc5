/**
 * The subid allocator's state in its KV bucket, one key per container and one per claimed block:
 *
 * - `<node>.id.<container id>` → {@link IdRecord}: the container's range and the token of the
 *   attempt that placed it. Written first, so every block claim has a record that explains it.
 * - `<node>.block.<first id of the block>` → {@link BlockClaim}: the ownership claim of one
 *   65536-id block, made with a create that fails when the key is live. The claim is what keeps
 *   two allocators (on two connections, or two processes) from handing out one block.
 * - `<node>.table` → {@link AllocationTable}: the layout before per-key state, read once to
 *   migrate it and then removed.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { ContainerId, Id, MAX_SUBID_SIZE, Timestamp, subidService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket, type KvStateStore, type StateStore } from '@sysbox-mgr-ts/kv-state';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import { z } from 'zod';

/** Names one placement attempt of a container; the blocks that attempt claimed carry it too. */
const AttemptToken = z.string().regex(/^[A-Za-z0-9_-]{1,32}$/);

/** uid and gid ranges start at the same id (the host set-up makes them match). */
export const IdRecord = z.object({
  start: Id,
  size: z.number().int().min(1).max(MAX_SUBID_SIZE),
  allocatedAt: Timestamp,
  token: AttemptToken,
  /** Every block of the range is claimed under `token`: only then is the range handed out or listed. */
  claimed: z.boolean(),
});
export type IdRecord = z.infer<typeof IdRecord>;

/**
 * A claim is live while its container's record carries the same token and covers the block;
 * otherwise it is an orphan (a crash between writes), which a later claim or the start
 * reconcile takes back.
 */
export const BlockClaim = z.object({ id: ContainerId, token: AttemptToken });
export type BlockClaim = z.infer<typeof BlockClaim>;

export const AllocationRecord = z.object({
  id: ContainerId,
  start: Id,
  size: z.number().int().min(1).max(MAX_SUBID_SIZE),
  allocatedAt: Timestamp,
});
export type AllocationRecord = z.infer<typeof AllocationRecord>;

/** The whole allocation table of a node in one value: the layout this state replaced. */
export const AllocationTable = z.object({ allocations: z.array(AllocationRecord) });
export type AllocationTable = z.infer<typeof AllocationTable>;
export const LEGACY_TABLE_KEY = 'table';

export interface SubidStores {
  ids: KvStateStore<IdRecord>;
  blocks: KvStateStore<BlockClaim>;
  legacyTable: StateStore<AllocationTable>;
}

export interface SubidStoreOptions {
  node: string;
  /** Replicas of the bucket when this call creates it. */
  replicas?: number;
  metrics?: AppMetrics;
}

export async function openSubidStores(nc: NatsConnection, opts: SubidStoreOptions): Promise<SubidStores> {
  const { node, metrics } = opts;
  const kv = await openBucket(nc, subidService.bucket, { replicas: opts.replicas, metrics });
  return {
    ids: createStateStore(kv, { node, namespace: 'id', schema: IdRecord, metrics }),
    blocks: createStateStore(kv, { node, namespace: 'block', schema: BlockClaim, metrics }),
    legacyTable: createStateStore(kv, { node, schema: AllocationTable, metrics }),
  };
}
