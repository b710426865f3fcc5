/**
 * The KV records of this node's marks: one per source, in bucket `sysbox-shiftfs` under
 * `<node>.mark.<key>`.
 *
 * Listing does not use kv.keys(): with @nats-io/kv 3.4 on nats-server 2.9, a keys() that runs
 * while another replica updates a key can wait forever (its ordered consumer never sees
 * pending 0), and concurrent unmarks do exactly that. The stream's own subject index
 * (STREAM.INFO with subjects_filter) answers in one request with no consumer.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { MarkInfo, SysboxError, Timestamp } from '@sysbox-mgr-ts/contracts';
import { createStateStore, decodeKeyToken, openBucket, type StateStore, type Versioned } from '@sysbox-mgr-ts/kv-state';
import { z } from 'zod';

export const MarkRecord = MarkInfo.extend({
  /** Random per claim: tells a re-created record for the same source apart from the one we saw. */
  claimId: z.string().min(1),
  /** When the record entered its current state; ages `mounting`/`unmounting` claims. */
  since: Timestamp,
});
export type MarkRecord = z.infer<typeof MarkRecord>;

export const MARK_BUCKET = 'sysbox-shiftfs';
const NAMESPACE = 'mark';
const API_TIMEOUT_MS = 5_000;

export interface MarkStoreOptions {
  node: string;
  bucket?: string;
  replicas?: number;
}

interface StreamInfoReply {
  error?: { code: number; description: string };
  total?: number;
  state?: { subjects?: Record<string, number> };
}

export async function openMarkStore(nc: NatsConnection, opts: MarkStoreOptions): Promise<StateStore<MarkRecord>> {
  const bucket = opts.bucket ?? MARK_BUCKET;
  const kv = await openBucket(nc, bucket, { replicas: opts.replicas, description: 'shiftfs marks and holders' });
  const store = createStateStore(kv, { node: opts.node, namespace: NAMESPACE, schema: MarkRecord });
  const subjectPrefix = `$KV.${bucket}.${opts.node}.${NAMESPACE}.`;

  async function listKeys(): Promise<string[]> {
    const keys: string[] = [];
    for (let offset = 0; ; ) {
      let reply: StreamInfoReply;
      try {
        const msg = await nc.request(
          `$JS.API.STREAM.INFO.KV_${bucket}`,
          JSON.stringify({ subjects_filter: `${subjectPrefix}*`, offset }),
          { timeout: API_TIMEOUT_MS },
        );
        reply = msg.json<StreamInfoReply>();
      } catch (err) {
        throw new SysboxError('unavailable', `state store: listing marks: ${(err as Error).message}`, { cause: err });
      }
      if (reply.error) throw new SysboxError('unavailable', `state store: listing marks: ${reply.error.description}`);
      const page = Object.keys(reply.state?.subjects ?? {});
      keys.push(...page.map((s) => decodeKeyToken(s.slice(subjectPrefix.length))));
      offset += page.length;
      if (page.length === 0 || offset >= (reply.total ?? 0)) return keys.sort();
    }
  }

  return {
    ...store,
    async list() {
      const out: Versioned<MarkRecord>[] = [];
      // A subject whose last message is a delete marker has no record: get() answers undefined.
      for (const key of await listKeys()) {
        const found = await store.get(key);
        if (found) out.push(found);
      }
      return out;
    },
  };
}
