/**
 * The NATS service (`$SRV`, ADR-32 "micro") protocol: PING, INFO and STATS on `$SRV.<verb>`,
 * `$SRV.<verb>.<name>` and `$SRV.<verb>.<name>.<id>`, so `nats micro ls|info|stats` see every replica.
 *
 * Implemented here rather than with @nats-io/services: that package exists only as a prerelease
 * pinned to an older nats-core, and it neither answers nor counts the failures of async handlers.
 * Here the endpoint handler is awaited, so request counts, errors and processing time are exact.
 */
import { nuid, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { encodeJson } from './wire.js';

export interface MicroEndpoint {
  name: string;
  subject: string;
  metadata?: Record<string, string>;
  /** Returns whether the request failed, and why, for STATS. */
  handler: (msg: Msg) => Promise<{ error?: string }>;
}

export interface MicroServiceConfig {
  name: string;
  version: string;
  description: string;
  metadata?: Record<string, string>;
  /** Queue group of every endpoint: replicas of one service share the load. */
  queue: string;
  endpoints: MicroEndpoint[];
}

interface EndpointStats {
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
}

export interface MicroService {
  readonly id: string;
  readonly name: string;
  info(): object;
  stats(): object;
  /** Stops taking requests and waits for those in flight. */
  stop(): Promise<void>;
}

const NAME = /^[-\w]+$/;
const STOP_DRAIN_MS = 3000;

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export function startMicroService(nc: NatsConnection, cfg: MicroServiceConfig): MicroService {
  if (!NAME.test(cfg.name)) throw new Error(`invalid service name ${cfg.name}`);
  const id = nuid.next();
  const started = new Date().toISOString();
  const metadata = cfg.metadata ?? {};
  const stats = new Map<string, EndpointStats>();
  const inFlight = new Set<Promise<unknown>>();
  const subs: Subscription[] = [];

  const identity = () => ({ name: cfg.name, id, version: cfg.version, metadata });

  for (const ep of cfg.endpoints) {
    const s: EndpointStats = {
      num_requests: 0,
      num_errors: 0,
      last_error: '',
      processing_time: 0,
      average_processing_time: 0,
    };
    stats.set(ep.name, s);
    subs.push(
      nc.subscribe(ep.subject, {
        queue: cfg.queue,
        callback: (err, msg) => {
          if (err) return;
          const t0 = process.hrtime.bigint();
          const p = ep
            .handler(msg)
            .then(
              (r) => r,
              (e: unknown) => ({ error: String((e as Error)?.message ?? e) }),
            )
            .then((r) => {
              s.num_requests++;
              if (r.error !== undefined) {
                s.num_errors++;
                s.last_error = r.error;
              }
              s.processing_time += Number(process.hrtime.bigint() - t0);
              s.average_processing_time = Math.round(s.processing_time / s.num_requests);
            })
            .finally(() => inFlight.delete(p));
          inFlight.add(p);
        },
      }),
    );
  }

  const info = () => ({
    type: 'io.nats.micro.v1.info_response',
    ...identity(),
    description: cfg.description,
    endpoints: cfg.endpoints.map((e) => ({
      name: e.name,
      subject: e.subject,
      queue_group: cfg.queue,
      metadata: e.metadata ?? {},
    })),
  });
  const statsReply = () => ({
    type: 'io.nats.micro.v1.stats_response',
    ...identity(),
    started,
    endpoints: cfg.endpoints.map((e) => ({
      name: e.name,
      subject: e.subject,
      queue_group: cfg.queue,
      ...stats.get(e.name)!,
    })),
  });
  const verbs: Record<string, () => object> = {
    PING: () => ({ type: 'io.nats.micro.v1.ping_response', ...identity() }),
    INFO: info,
    STATS: statsReply,
  };
  for (const [verb, answer] of Object.entries(verbs)) {
    for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${cfg.name}`, `$SRV.${verb}.${cfg.name}.${id}`]) {
      // Discovery subjects take no queue group: every replica answers.
      subs.push(
        nc.subscribe(subject, {
          callback: (err, msg) => {
            if (!err) msg.respond(encodeJson(answer()));
          },
        }),
      );
    }
  }

  return {
    id,
    name: cfg.name,
    info,
    stats: statsReply,
    async stop() {
      // Drain needs the server; when it is gone, unsubscribing locally is all that is left.
      const drained = Promise.all(subs.map((s) => s.drain().catch(() => undefined)));
      const bounded = await Promise.race([drained.then(() => true), delay(STOP_DRAIN_MS).then(() => false)]);
      if (!bounded) for (const s of subs) s.unsubscribe();
      await Promise.all([...inFlight]);
    },
  };
}
