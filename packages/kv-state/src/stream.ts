/**
 * Reading and removing the bucket's stream messages directly: the live keys from the subject
 * index, the last message of every key in one pass, and a message (a value or an old delete
 * marker) removed by its sequence.
 */
import type { Bucket } from '@nats-io/kv';
import { AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import { nanos, type MsgHdrs } from '@nats-io/nats-core';
import { kvCall } from './errors.js';
import { decodeKeyToken, encodeKeyToken } from './keys.js';

/**
 * The keys under `prefix`, from the stream's subject index (STREAM.INFO with subjects_filter):
 * one request, no consumer. Not kv.keys(): with @nats-io/kv 3.4 on nats-server 2.9, a keys()
 * that runs while another writer updates a key can wait forever (its ordered consumer never
 * sees pending 0), and replicas of a service list while others write.
 */
export async function listKeys(kv: Bucket, prefix: string): Promise<string[]> {
  const subjectPrefix = `${kv.prefix}.${prefix}`;
  const info = await kvCall(() => kv.jsm.streams.info(kv.stream, { subjects_filter: `${subjectPrefix}*` }));
  return Object.keys(info.state.subjects ?? {})
    .map((subject) => decodeKeyToken(subject.slice(subjectPrefix.length)))
    .sort();
}

/**
 * Removes the message at `seq`: a key's value, or a delete marker. `no_erase`: the bytes are
 * dropped from the index, not overwritten on disk (the file is compacted as blocks empty).
 * A sequence that holds no message any more answers a conflict (see isConflict).
 */
export async function removeMessage(kv: Bucket, seq: number): Promise<boolean> {
  return kv.jsm.streams.deleteMessage(kv.stream, seq, false);
}

/**
 * Removes a delete marker that kv.delete() left (before deletes removed their key's message, or
 * from a hand-run `nats kv del`): the marker's own sequence, so a value written since is kept.
 * Best effort: the next read or list that meets it tries again.
 */
export async function sweepMarker(kv: Bucket, seq: number): Promise<void> {
  await removeMessage(kv, seq).catch(() => undefined);
}

/**
 * The last message of every key under `prefix`, mostly in one pass: an ephemeral pull consumer
 * that delivers the last message per subject, read up to the count it had pending when it was
 * made, then deleted. A get per key cost one round trip each (2,000 for a busy node's container
 * table). With writers at work the consumer also delivers newer messages in stream order and may
 * then stop before an older key: the newest message per key wins, and keys the subject index
 * lists but the pass missed are read one by one. Reads the stream leader, like a get.
 */
export interface LastMessage {
  subject: string;
  revision: number;
  /** A delete or purge marker: the key has no value. */
  deleted: boolean;
  json(): unknown;
}

function isDeleteMarker(headers: MsgHdrs | undefined): boolean {
  const op = headers?.get('KV-Operation');
  return op === 'DEL' || op === 'PURGE';
}

export async function lastMessages(kv: Bucket, prefix: string): Promise<LastMessage[]> {
  const info = await kv.jsm.consumers.add(kv.stream, {
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.LastPerSubject,
    filter_subject: `${kv.prefix}.${prefix}*`,
    mem_storage: true,
    num_replicas: 1,
    // Removed by the server if this process dies before deleting it.
    inactive_threshold: nanos(30_000),
  });
  const newest = new Map<string, LastMessage>();
  try {
    if (info.num_pending > 0) {
      const consumer = await kv.js.consumers.get(kv.stream, info.name);
      const messages = await consumer.fetch({ max_messages: info.num_pending, expires: 5000 });
      let n = 0;
      for await (const m of messages) {
        if ((newest.get(m.subject)?.revision ?? 0) < m.seq) {
          newest.set(m.subject, {
            subject: m.subject,
            revision: m.seq,
            deleted: isDeleteMarker(m.headers),
            json: () => m.json(),
          });
        }
        if (++n >= info.num_pending) break;
      }
    }
  } finally {
    await kv.jsm.consumers.delete(kv.stream, info.name).catch(() => undefined);
  }
  const subjectPrefix = `${kv.prefix}.${prefix}`;
  for (const key of await listKeys(kv, prefix)) {
    const subject = subjectPrefix + encodeKeyToken(key);
    if (newest.has(subject)) continue;
    const m = await kv.jsm.streams.getMessage(kv.stream, { last_by_subj: subject }).catch(() => undefined);
    if (m)
      newest.set(subject, {
        subject,
        revision: m.seq,
        deleted: isDeleteMarker(m.header),
        json: () => m.json(),
      });
  }
  return [...newest.values()];
}
