/**
 * Serves contracts as NATS endpoints: every request is parsed and validated before its handler
 * runs, every failure (sync throw or async rejection) becomes a typed error reply, and each
 * request is logged once.
 */
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import {
  SysboxError,
  type Contract,
  type ReplyOf,
  type RequestOf,
  type ServiceContract,
} from '@sysbox-mgr-ts/contracts';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import type { Logger } from 'pino';
import { startMicroService, type MicroService } from './micro.js';
import { CALL_ID_HEADER, REQUEST_ID_HEADER, decodeJson, encodeJson, errorReply } from './wire.js';

export interface RequestContext {
  log: Logger;
  subject: string;
  reqId: string;
}

export type Handler<C extends Contract> = (req: RequestOf<C>, ctx: RequestContext) => Promise<ReplyOf<C>>;

export interface Binding {
  contract: Contract;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a list of handlers of different contracts
  handler: (req: any, ctx: RequestContext) => Promise<unknown>;
}

/** Pairs a contract with its handler; the handler's types come from the contract. */
export function handle<C extends Contract>(contract: C, handler: Handler<C>): Binding {
  return { contract, handler };
}

export type Outcome = { ok: true; reply: unknown } | { ok: false; error: SysboxError };

let requestCounter = 0;

/**
 * Runs one request through validation, the handler and reply validation, with no network:
 * the path every NATS request takes, callable from tests as fastify's inject is.
 */
export async function processRequest(
  binding: Binding,
  data: Uint8Array,
  ctx: RequestContext,
): Promise<Outcome> {
  const { contract } = binding;
  let payload: unknown;
  try {
    payload = data.length === 0 ? {} : decodeJson(data);
  } catch {
    return {
      ok: false,
      error: new SysboxError('invalid-request', `${contract.endpoint}: body is not valid JSON`),
    };
  }
  const parsed = contract.request.safeParse(payload);
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
    return { ok: false, error: new SysboxError('invalid-request', `${contract.endpoint}: ${why}`) };
  }
  try {
    const reply = await binding.handler(parsed.data, ctx);
    const checked = contract.reply.safeParse(reply);
    if (!checked.success) {
      return {
        ok: false,
        error: new SysboxError(
          'internal',
          `${contract.endpoint}: reply failed its schema: ${checked.error.message}`,
        ),
      };
    }
    return { ok: true, reply: checked.data };
  } catch (err) {
    return { ok: false, error: SysboxError.from(err) };
  }
}

export interface ServeOptions {
  nc: NatsConnection;
  service: ServiceContract;
  node: string;
  version: string;
  log: Logger;
  bindings: Binding[];
  metadata?: Record<string, string>;
  /** Records each request: count by outcome, latency, in flight (the app's DaemonContext.metrics). */
  metrics?: AppMetrics;
}

/** Registers one micro service with an endpoint per binding, queue group = service name. */
export function serve(opts: ServeOptions): MicroService {
  const { nc, service, node, log } = opts;
  const bound = new Set(opts.bindings.map((b) => b.contract));
  const missing = service.contracts.filter((c) => !bound.has(c));
  if (missing.length > 0) {
    throw new Error(`${service.name}: no handler for ${missing.map((c) => c.endpoint).join(', ')}`);
  }
  return startMicroService(nc, {
    name: service.name,
    version: opts.version,
    description: service.description,
    metadata: { node, ...opts.metadata },
    queue: service.name,
    endpoints: opts.bindings.map((b) => {
      const subject = b.contract.subject(node);
      return {
        name: b.contract.endpoint,
        subject,
        metadata: { description: b.contract.description },
        handler: (msg: Msg) =>
          respond(b, subject, msg, log, opts.metrics?.natsRequest(service.name, b.contract.endpoint)),
      };
    }),
  });
}

/**
 * Outcomes of calls in flight or just answered, by subject and call id. A client sends a call
 * again when its reply may have been lost; a copy that arrives while the call runs (or soon after
 * it answered) gets the same outcome instead of running it again behind the per-key lock, where
 * it would redo long work (an rsync, a chown walk) for a caller that already has its answer.
 */
const recentCalls = new Map<string, { outcome: Promise<Outcome>; data: Uint8Array; at: number }>();
const RECENT_CALL_MS = 60_000;
const RECENT_CALLS_MAX = 10_000;

/** `data` must match too: a call id is a caller's word, and another body is another call. */
function sharedOutcome(key: string, data: Uint8Array, run: () => Promise<Outcome>): Promise<Outcome> {
  const now = Date.now();
  const known = recentCalls.get(key);
  if (known && now - known.at < RECENT_CALL_MS)
    return Buffer.from(known.data).equals(data) ? known.outcome : run();
  for (const [k, v] of recentCalls) {
    if (recentCalls.size < RECENT_CALLS_MAX && now - v.at < RECENT_CALL_MS) break;
    recentCalls.delete(k);
  }
  const outcome = run();
  // Re-inserted at the end, so the map stays in time order for the eviction above.
  recentCalls.delete(key);
  recentCalls.set(key, { outcome, data, at: now });
  return outcome;
}

async function respond(
  b: Binding,
  subject: string,
  msg: Msg,
  root: Logger,
  finish?: (code: string) => void,
): Promise<{ error?: string }> {
  const reqId = msg.headers?.get(REQUEST_ID_HEADER) || `${process.pid}-${++requestCounter}`;
  const log = root.child({ subject, reqId });
  const started = performance.now();
  const callId = msg.headers?.get(CALL_ID_HEADER);
  const run = (): Promise<Outcome> => processRequest(b, msg.data, { log, subject, reqId });
  const outcome = await (callId ? sharedOutcome(`${subject} ${callId}`, msg.data, run) : run());
  const ms = Math.round((performance.now() - started) * 1000) / 1000;
  const containerId = peekId(msg.data);
  finish?.(outcome.ok ? 'ok' : outcome.error.code);
  if (outcome.ok) {
    msg.respond(encodeJson(outcome.reply));
    log.info({ id: containerId, ms }, 'ok');
    return {};
  }
  const { error } = outcome;
  const r = errorReply(error);
  msg.respond(r.data, { headers: r.headers });
  if (error.code === 'internal')
    log.error({ id: containerId, ms, code: error.code, err: error }, error.message);
  else log.warn({ id: containerId, ms, code: error.code }, error.message);
  return { error: `${error.code}: ${error.message}` };
}

function peekId(data: Uint8Array): string | undefined {
  try {
    const v = decodeJson(data) as { id?: unknown };
    return typeof v?.id === 'string' ? v.id.slice(0, 128) : undefined;
  } catch {
    return undefined;
  }
}
