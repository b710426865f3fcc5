/**
 * What a daemon records, as an interface with no dependency: service-kit, kv-state and the apps
 * call it, and only a process started with --metrics-address loads prom-client
 * (`@sysbox-mgr-ts/metrics/prometheus`) to back it. Without the flag every hook is `undefined`
 * and costs one optional call.
 *
 * METRICS is the catalogue: every series a daemon exports, its type and its labels, in one place
 * (the registry is built from it, the README lists it, a test holds the two together). Labels are
 * bounded: an app, a service and endpoint name, a gRPC method, a KV bucket and operation, a
 * closed list of error codes, a volume kind. Never a container id, a path or a node-specific
 * subject.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricDef {
  name: string;
  type: MetricType;
  help: string;
  labels: readonly string[];
}

/** Request latencies: from 0.5 ms (a KV get on loopback) to 30 s (the gateway's call bound). */
export const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];
/** Tree walks and copies: from 10 ms (an empty dir) to 30 min (the default rsync bound). */
export const WORK_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

const m = (name: string, type: MetricType, help: string, labels: readonly string[]): MetricDef => ({
  name,
  type,
  help,
  labels,
});

export const METRICS = {
  natsRequests: m(
    'sysbox_nats_requests_total',
    'counter',
    'NATS service requests answered, by endpoint and outcome (ok, or the error code of the reply)',
    ['app', 'service', 'endpoint', 'code'],
  ),
  natsDuration: m(
    'sysbox_nats_request_duration_seconds',
    'histogram',
    'time from a NATS request arriving to its reply, by endpoint',
    ['app', 'service', 'endpoint'],
  ),
  natsInFlight: m('sysbox_nats_requests_in_flight', 'gauge', 'NATS requests being handled now, by endpoint', [
    'app',
    'service',
    'endpoint',
  ]),
  grpcRequests: m(
    'sysbox_grpc_requests_total',
    'counter',
    'gRPC calls answered by the gateway, by method and status (OK, or the gRPC status name of the error)',
    ['app', 'method', 'code'],
  ),
  grpcDuration: m(
    'sysbox_grpc_request_duration_seconds',
    'histogram',
    'time from a gRPC call arriving at the gateway to its answer, by method',
    ['app', 'method'],
  ),
  grpcInFlight: m(
    'sysbox_grpc_requests_in_flight',
    'gauge',
    'gRPC calls the gateway is handling now, by method',
    ['app', 'method'],
  ),
  kvDuration: m(
    'sysbox_kv_operation_duration_seconds',
    'histogram',
    'time of one state operation in JetStream KV, retries included, by bucket and operation',
    ['app', 'bucket', 'op'],
  ),
  kvErrors: m(
    'sysbox_kv_operation_errors_total',
    'counter',
    'state operations that failed, by bucket, operation and error code',
    ['app', 'bucket', 'op', 'code'],
  ),
  kvRetries: m(
    'sysbox_kv_retries_total',
    'counter',
    'state operation attempts repeated: a compare-and-set conflict, or a transient failure waited out',
    ['app', 'bucket', 'op', 'reason'],
  ),
  bucketBytes: m(
    'sysbox_kv_bucket_bytes',
    'gauge',
    "bytes a KV bucket's stream holds (read on scrape, cached briefly)",
    ['app', 'bucket'],
  ),
  bucketMaxBytes: m('sysbox_kv_bucket_max_bytes', 'gauge', "a KV bucket's size limit in bytes", [
    'app',
    'bucket',
  ]),
  bucketFill: m(
    'sysbox_kv_bucket_fill_ratio',
    'gauge',
    'bytes held over the size limit, 0 to 1: at 1 writes fail with exhausted',
    ['app', 'bucket'],
  ),
  bucketMessages: m('sysbox_kv_bucket_messages', 'gauge', "messages in a KV bucket's stream", [
    'app',
    'bucket',
  ]),
  containers: m(
    'sysbox_containers',
    'gauge',
    "containers in the gateway's table (registered, running or stopped)",
    ['app'],
  ),
  volumes: m('sysbox_volumes', 'gauge', 'inner-store volumes vol-mgr holds, by kind', ['app', 'kind']),
  clones: m('sysbox_rootfs_clones', 'gauge', 'rootfs clones rootfs-cloner holds', ['app']),
  marks: m('sysbox_shiftfs_marks', 'gauge', 'shiftfs marks shiftfs-mgr holds', ['app']),
  subidAllocations: m('sysbox_subid_allocations', 'gauge', 'subordinate id ranges held by containers', [
    'app',
  ]),
  subidAllocatedIds: m(
    'sysbox_subid_allocated_ids',
    'gauge',
    'subordinate ids of the pool in use (in shared mode, the one shared range while any container holds it)',
    ['app'],
  ),
  subidPoolIds: m('sysbox_subid_pool_ids', 'gauge', 'subordinate ids in the pool', ['app']),
  subidPoolUsage: m('sysbox_subid_pool_usage_ratio', 'gauge', 'allocated ids over pool ids, 0 to 1', ['app']),
  rsyncDuration: m(
    'sysbox_rsync_duration_seconds',
    'histogram',
    'time of a completed volume rsync (the id scan included), by operation',
    ['app', 'op'],
  ),
  rsyncEntries: m(
    'sysbox_rsync_entries_total',
    'counter',
    'entries scanned for id shifting by completed volume rsyncs, by operation',
    ['app', 'op'],
  ),
  idShiftDuration: m(
    'sysbox_idshift_duration_seconds',
    'histogram',
    'time of a completed id-shift walk (chown of a tree), by operation',
    ['app', 'op'],
  ),
  idShiftEntries: m(
    'sysbox_idshift_entries_total',
    'counter',
    'entries whose owner an id-shift walk changed, by operation',
    ['app', 'op'],
  ),
} as const satisfies Record<string, MetricDef>;

export type MetricKey = keyof typeof METRICS;

/** The gauges of what an app holds, read on scrape. */
export type StateGauge =
  | 'containers'
  | 'volumes'
  | 'clones'
  | 'marks'
  | 'subidAllocations'
  | 'subidAllocatedIds'
  | 'subidPoolIds'
  | 'subidPoolUsage';

/** A gauge's value, or one per value of its one extra label (a volume's kind). */
export type StateReading = number | Record<string, number>;

/** Store operations: every write is a compare-and-set (create, update), so there is no blind put. */
export type KvOp = 'get' | 'create' | 'update' | 'delete' | 'list';

export interface BucketStatus {
  bytes: number;
  maxBytes: number;
  messages: number;
}

/** Ends a timed operation with its outcome: 'ok', or an error code. */
export type Finish = (code: string) => void;

/** One app's recorder; in the all-in-one each app has its own, all in one registry (label `app`). */
export interface AppMetrics {
  natsRequest(service: string, endpoint: string): Finish;
  grpcCall(method: string): Finish;
  kvOp(bucket: string, op: KvOp): Finish;
  kvRetry(bucket: string, op: KvOp, reason: 'conflict' | 'transient'): void;
  /** Reads the bucket's stream info on scrape (cached); a bucket opened twice is read once. */
  bucket(name: string, status: () => Promise<BucketStatus>): void;
  /** Reads a state gauge on scrape (cached): from memory where the app holds it, else a list. */
  state(gauge: StateGauge, read: () => StateReading | Promise<StateReading>): void;
  /** Starts timing an rsync or an id shift; call the result when it completed, with its entries. */
  work(kind: 'rsync' | 'idShift', op: string): (entries?: number) => void;
}

/**
 * Reuses one reading for `ms`, and one read in flight for every caller: what bounds the cost of a
 * gauge read from a KV list, and lets several gauges share one reading.
 */
export function cached<T>(read: () => T | Promise<T>, ms: number): () => Promise<T> {
  let at = -Infinity;
  let last: Promise<T> | undefined;
  return () => {
    const now = performance.now();
    if (last && now - at < ms) return last;
    at = now;
    const p = Promise.resolve().then(read);
    last = p;
    // A failed read is not kept: the next scrape tries again.
    p.catch(() => {
      if (last === p) at = -Infinity;
    });
    return p;
  };
}

/** How long an app reuses a gauge reading that costs a KV list (a scrape every 15 s reads at most once per 10 s). */
export const STATE_READ_CACHE_MS = 10_000;

/**
 * An id-shift walk (`@sysbox-mgr-ts/id-shift` shift, as vol-mgr and rootfs-cloner inject it)
 * that records its duration and the entries it changed: op `shift`, or `revert` for negative
 * offsets. Without metrics, the walk itself.
 */
export function timedShift<A extends unknown[], R extends { entries: number }>(
  shift: (root: string, uidOffset: number, gidOffset: number, ...rest: A) => Promise<R>,
  metrics: AppMetrics | undefined,
): (root: string, uidOffset: number, gidOffset: number, ...rest: A) => Promise<R> {
  if (!metrics) return shift;
  return async (root, uidOffset, gidOffset, ...rest) => {
    const done = metrics.work('idShift', uidOffset < 0 || gidOffset < 0 ? 'revert' : 'shift');
    const r = await shift(root, uidOffset, gidOffset, ...rest);
    done(r.entries);
    return r;
  };
}

/** `host:port` or `[v6]:port` (the --metrics-address syntax); port 0 picks a free one (tests). */
export function parseListenAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${address} is not host:port`);
  return { host: m[1] ?? m[2]!, port };
}
