/**
 * The prom-client side: one Registry per process built from the catalogue (METRICS), a recorder
 * per app over it, and the one HTTP listener that serves it at /metrics. Loaded only when a
 * daemon has --metrics-address.
 *
 * Process metrics are prom-client's defaults, unprefixed (process_cpu_seconds_total,
 * nodejs_heap_size_used_bytes, ...): those names are what existing Node.js dashboards query.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import {
  LATENCY_BUCKETS,
  METRICS,
  WORK_BUCKETS,
  cached,
  parseListenAddress,
  type AppMetrics,
  type BucketStatus,
  type StateGauge,
  type StateReading,
} from './index.js';

export interface MetricsRegistry {
  /** The recorder of one app: every series it records carries `app="<app>"`. */
  forApp(app: string): AppMetrics;
  /** The exposition text, as a scrape gets it. */
  text(): Promise<string>;
  readonly contentType: string;
  readonly registry: Registry;
}

export interface RegistryOptions {
  /** How long a state or bucket reading is reused before it is read again (default 5 s). */
  cacheMs?: number;
  /** Told when a reading failed (its series is left out of that scrape). */
  onReadError?: (err: unknown, what: string) => void;
}

export function createMetricsRegistry(opts: RegistryOptions = {}): MetricsRegistry {
  const cacheMs = opts.cacheMs ?? 5000;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const counter = (d: (typeof METRICS)[keyof typeof METRICS]) =>
    new Counter({ name: d.name, help: d.help, labelNames: d.labels, registers });
  const histogram = (d: (typeof METRICS)[keyof typeof METRICS], buckets: number[]) =>
    new Histogram({ name: d.name, help: d.help, labelNames: d.labels, buckets, registers });
  const gauge = (d: (typeof METRICS)[keyof typeof METRICS], collect?: (g: Gauge) => Promise<void>) =>
    new Gauge({
      name: d.name,
      help: d.help,
      labelNames: d.labels,
      registers,
      ...(collect
        ? {
            async collect(this: Gauge) {
              this.reset();
              await collect(this);
            },
          }
        : {}),
    });

  /**
   * Calls in flight, kept as plain numbers per label set and set on the gauge at scrape: the hot
   * path pays a map lookup instead of two more label-hashed gauge updates.
   */
  const inFlightGauge = (d: (typeof METRICS)[keyof typeof METRICS]) => {
    const counts = new Map<string, { labels: Record<string, string>; n: number }>();
    gauge(d, (g) => {
      for (const { labels, n } of counts.values()) g.set(labels, n);
      return Promise.resolve();
    });
    return (key: string, labels: Record<string, string>) => {
      let c = counts.get(key);
      if (!c) counts.set(key, (c = { labels, n: 0 }));
      return c;
    };
  };
  /** The request counters, the same way: plain totals per label set, handed to prom-client at scrape. */
  const countedAtScrape = (d: (typeof METRICS)[keyof typeof METRICS]) => {
    const totals = new Map<string, { labels: Record<string, string>; n: number }>();
    new Counter({
      name: d.name,
      help: d.help,
      labelNames: d.labels,
      registers,
      collect(this: Counter) {
        this.reset();
        for (const { labels, n } of totals.values()) this.inc(labels, n);
      },
    });
    return (key: string, labels: () => Record<string, string>) => {
      let t = totals.get(key);
      if (!t) totals.set(key, (t = { labels: labels(), n: 0 }));
      t.n++;
    };
  };
  const natsRequests = countedAtScrape(METRICS.natsRequests);
  const natsDuration = histogram(METRICS.natsDuration, LATENCY_BUCKETS);
  const natsInFlight = inFlightGauge(METRICS.natsInFlight);
  const grpcRequests = countedAtScrape(METRICS.grpcRequests);
  const grpcDuration = histogram(METRICS.grpcDuration, LATENCY_BUCKETS);
  const grpcInFlight = inFlightGauge(METRICS.grpcInFlight);
  const kvDuration = histogram(METRICS.kvDuration, LATENCY_BUCKETS);
  const kvErrors = counter(METRICS.kvErrors);
  const kvRetries = counter(METRICS.kvRetries);
  const work = {
    rsync: {
      duration: histogram(METRICS.rsyncDuration, WORK_BUCKETS),
      entries: counter(METRICS.rsyncEntries),
    },
    idShift: {
      duration: histogram(METRICS.idShiftDuration, WORK_BUCKETS),
      entries: counter(METRICS.idShiftEntries),
    },
  };

  const failed = (what: string) => (err: unknown) => {
    opts.onReadError?.(err, what);
    return undefined;
  };

  // Buckets: one stream-info read per bucket and scrape feeds its four gauges.
  const buckets = new Map<string, { app: string; bucket: string; read: () => Promise<BucketStatus> }>();
  const bucketGauge = (d: (typeof METRICS)[keyof typeof METRICS], value: (s: BucketStatus) => number) =>
    gauge(d, async (g) => {
      await Promise.all(
        [...buckets.values()].map(async ({ app, bucket, read }) => {
          const s = await read().catch(failed(`bucket ${bucket}`));
          if (s) g.set({ app, bucket }, value(s));
        }),
      );
    });
  bucketGauge(METRICS.bucketBytes, (s) => s.bytes);
  bucketGauge(METRICS.bucketMaxBytes, (s) => s.maxBytes);
  bucketGauge(METRICS.bucketFill, (s) => (s.maxBytes > 0 ? s.bytes / s.maxBytes : 0));
  bucketGauge(METRICS.bucketMessages, (s) => s.messages);

  // What apps hold: each gauge reads its sources on scrape.
  const states = new Map<StateGauge, { app: string; read: () => Promise<StateReading> }[]>();
  for (const key of [
    'containers',
    'volumes',
    'clones',
    'marks',
    'subidAllocations',
    'subidAllocatedIds',
    'subidPoolIds',
    'subidPoolUsage',
  ] as const) {
    const def = METRICS[key];
    const extra = def.labels.find((l) => l !== 'app');
    states.set(key, []);
    gauge(def, async (g) => {
      await Promise.all(
        states.get(key)!.map(async ({ app, read }) => {
          const r = await read().catch(failed(`${def.name} of ${app}`));
          if (typeof r === 'number') g.set({ app }, r);
          else if (r && extra) for (const [v, n] of Object.entries(r)) g.set({ app, [extra]: v }, n);
        }),
      );
    });
  }

  const timer = () => {
    const t0 = performance.now();
    return () => (performance.now() - t0) / 1000;
  };

  return {
    registry,
    contentType: registry.contentType,
    text: () => registry.metrics(),
    forApp(app) {
      return {
        natsRequest(service, endpoint) {
          const labels = { app, service, endpoint };
          const inFlight = natsInFlight(`${app}\0${service}\0${endpoint}`, labels);
          inFlight.n++;
          const elapsed = timer();
          return (code) => {
            inFlight.n--;
            natsDuration.observe(labels, elapsed());
            natsRequests(`${app}\0${service}\0${endpoint}\0${code}`, () => ({ ...labels, code }));
          };
        },
        grpcCall(method) {
          const labels = { app, method };
          const inFlight = grpcInFlight(`${app}\0${method}`, labels);
          inFlight.n++;
          const elapsed = timer();
          return (code) => {
            inFlight.n--;
            grpcDuration.observe(labels, elapsed());
            grpcRequests(`${app}\0${method}\0${code}`, () => ({ ...labels, code }));
          };
        },
        kvOp(bucket, op) {
          const elapsed = timer();
          return (code) => {
            kvDuration.observe({ app, bucket, op }, elapsed());
            if (code !== 'ok') kvErrors.inc({ app, bucket, op, code });
          };
        },
        kvRetry(bucket, op, reason) {
          kvRetries.inc({ app, bucket, op, reason });
        },
        bucket(name, status) {
          const key = `${app}\0${name}`;
          if (!buckets.has(key)) buckets.set(key, { app, bucket: name, read: cached(status, cacheMs) });
        },
        state(key, read) {
          states.get(key)!.push({ app, read: cached(read, cacheMs) });
        },
        work(kind, op) {
          const elapsed = timer();
          return (entries) => {
            work[kind].duration.observe({ app, op }, elapsed());
            if (entries !== undefined) work[kind].entries.inc({ app, op }, entries);
          };
        },
      };
    },
  };
}

export interface MetricsServer {
  /** Where it listens, `host:port` with the port it got. */
  address: string;
  port: number;
  stop(): Promise<void>;
}

/** Serves `GET /metrics` on `address`; anything else is 404. Never serves anything but the registry's text. */
export async function startMetricsServer(address: string, metrics: MetricsRegistry): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(address);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(path === '/metrics' ? 405 : 404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.contentType }).end(body),
      (err: unknown) =>
        res
          .writeHead(500, { 'content-type': 'text/plain' })
          .end(`metrics failed: ${(err as Error).message}\n`),
    );
  });
  // A scraper holding a keep-alive connection must not keep a stopping daemon alive.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    address: `${host.includes(':') ? `[${host}]` : host}:${bound}`,
    port: bound,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
