/** The bucket: its limits, and binding it (creating it on first use). */
import { Kvm, type KV } from '@nats-io/kv';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import { retryTransient } from '@sysbox-mgr-ts/nats-retry';
import { asUnavailable } from './errors.js';

export interface BucketOptions {
  /** 1 on the embedded default, 3 on a cluster. */
  replicas?: number;
  description?: string;
  /** The bucket's size limit: past it, writes fail with `exhausted` instead of filling the disk. */
  maxBytes?: number;
  /** Largest value one key may hold. */
  maxValueSize?: number;
  /** How long to wait out a failover (see nats-retry) before giving up. */
  retryWindowMs?: number;
  /** Exports the bucket's bytes, limit and fill on scrape (its stream info). */
  metrics?: AppMetrics;
}

/**
 * Long enough for a JetStream leader election after a lost server (about 5 s measured on an idle
 * machine, more on a loaded one), short enough to answer within the gateway's 10 s call bound
 * most of the time.
 */
export const DEFAULT_RETRY_WINDOW_MS = 15_000;

/**
 * One JetStream request's wait. During an election a read (`STREAM.MSG.GET`) gets no answer until
 * there is a new leader, so a shorter wait reaches the new leader sooner. 1 s was tried: the
 * cluster's failover figures did not clearly move, and the one full bench run with it saw a
 * service's list time out on a heavily loaded host (not reproduced; a request slower than the wait
 * fails every attempt). 2 s keeps that headroom.
 */
const JS_REQUEST_TIMEOUT_MS = 2000;
/** Creating a replicated stream starts a raft group: slower than any other request. */
const JS_CREATE_TIMEOUT_MS = 5000;

/**
 * Default bucket limits: far above what a node's records need (about 300,000 records of 200
 * bytes), far below a disk. JetStream reserves max_bytes once per replica against the account
 * (2 GiB): five R3 buckets of 64 MiB take 960 MiB.
 */
export const DEFAULT_BUCKET_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_VALUE_SIZE = 1024 * 1024;

/**
 * Binds the bucket, creating it on first use. Creating is idempotent for an identical config;
 * a bucket an operator made with other settings (say, more replicas) is bound as it is.
 *
 * Reads go to the stream leader (no direct get): with direct get, an R3 bucket answers from any
 * replica, and a follower that lags misses the caller's own last write.
 */
export async function openBucket(nc: NatsConnection, name: string, opts: BucketOptions = {}): Promise<KV> {
  // A daemon that starts during an election waits for JetStream instead of failing its start.
  const kv = await retryTransient(() => openBucketOnce(nc, name, opts), {
    idempotent: true,
    deadline: Date.now() + (opts.retryWindowMs ?? DEFAULT_RETRY_WINDOW_MS),
  });
  opts.metrics?.bucket(name, async () => {
    const s = await kv.status();
    return { bytes: s.size, maxBytes: s.max_bytes, messages: s.values };
  });
  return kv;
}

async function openBucketOnce(nc: NatsConnection, name: string, opts: BucketOptions): Promise<KV> {
  const kvm = new Kvm(jetstream(nc, { timeout: JS_REQUEST_TIMEOUT_MS }));
  try {
    await new Kvm(jetstream(nc, { timeout: JS_CREATE_TIMEOUT_MS })).create(name, {
      replicas: opts.replicas ?? 1,
      history: 1,
      description: opts.description,
      max_bytes: opts.maxBytes ?? DEFAULT_BUCKET_MAX_BYTES,
      maxValueSize: opts.maxValueSize ?? DEFAULT_MAX_VALUE_SIZE,
      allow_direct: false,
    });
  } catch (err) {
    const kv = await kvm.open(name);
    await kv.status().catch(() => {
      throw asUnavailable(err);
    });
    return kv;
  }
  // Bound to the context with the short wait, for every operation after the create.
  return kvm.open(name);
}
