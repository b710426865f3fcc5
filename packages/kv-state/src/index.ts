/**
 * Durable service state in JetStream KV: one bucket per service, keys `<node>.<container id>`,
 * every write a compare-and-set on the entry's revision so replicas never overwrite each other.
 *
 * A delete leaves nothing behind: it removes the key's one message (history 1) by its sequence
 * (STREAM.MSG.DELETE), which succeeds only while that message is still the key's value, so it is
 * a compare-and-set too. No delete marker stays in the stream: the bucket's messages and bytes,
 * its subject index and every list are bounded by the live records, not by all that ever existed.
 * Markers a kv.delete() left (state written before this, or by the NATS CLI) are removed where a
 * read or a list meets them.
 */
export {
  DEFAULT_BUCKET_MAX_BYTES,
  DEFAULT_MAX_VALUE_SIZE,
  DEFAULT_RETRY_WINDOW_MS,
  openBucket,
  type BucketOptions,
} from './bucket.js';
export { decodeKeyToken, encodeKeyToken } from './keys.js';
export { createStateStore } from './store.js';
export {
  REMOVE,
  type Change,
  type KvStateStore,
  type Mutation,
  type StateStore,
  type StoreOptions,
  type Versioned,
} from './types.js';
export { BOOT_ID_FILE, bootOf, readBootId, type BootOf } from './boot.js';
