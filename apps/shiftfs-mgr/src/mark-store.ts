/**
 * The KV records of this node's marks: one per source, in bucket `sysbox-shiftfs` under
 * `<node>.mark.<key>`.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { MarkInfo, Timestamp, shiftfsService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import { z } from 'zod';

export const MarkRecord = MarkInfo.extend({
  /** Random per claim: tells a re-created record for the same source apart from the one we saw. */
  claimId: z.string().min(1),
  /** When the record entered its current state; ages `mounting`/`unmounting` claims. */
  since: Timestamp,
});
export type MarkRecord = z.infer<typeof MarkRecord>;

const NAMESPACE = 'mark';

export interface MarkStoreOptions {
  node: string;
  bucket?: string;
  replicas?: number;
  metrics?: AppMetrics;
}

export async function openMarkStore(
  nc: NatsConnection,
  opts: MarkStoreOptions,
): Promise<KvStateStore<MarkRecord>> {
  const kv = await openBucket(nc, opts.bucket ?? shiftfsService.bucket, {
    replicas: opts.replicas,
    description: 'shiftfs marks and holders',
    metrics: opts.metrics,
  });
  return createStateStore(kv, {
    node: opts.node,
    namespace: NAMESPACE,
    schema: MarkRecord,
    metrics: opts.metrics,
  });
}
