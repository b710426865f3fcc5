/**
 * Reads the fleet off the bus with read-only requests only: one `$SRV.STATS` that every instance
 * of every service answers (name, version, node, start time, counts), then per node either its four
 * `summary` subjects (the default: one small reply each, counts only) or, with `containers`, its
 * four list subjects, read page by page to the end. A node's reads start as soon as its first
 * instance answers discovery (or at once for a node named with --node), all nodes at the same
 * time, so the whole inventory takes about the time of the slowest node's reads, not their sum.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import {
  LIST_MAX_LIMIT,
  SUBID_LIST_MAX_LIMIT,
  SysboxError,
  VolumeKindSchema,
  rootfsList,
  rootfsSummary,
  shiftfsList,
  shiftfsSummary,
  subidList,
  subidSummary,
  volList,
  volSummary,
  type Contract,
  type RequestInputOf,
  type ServiceName,
} from '@sysbox-mgr-ts/contracts';
import { allPages, decodeJson, encodeJson, errorFromReply } from '@sysbox-mgr-ts/service-kit';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  isSysboxService,
  type FleetSnapshot,
  type InstanceStats,
  type NodeLists,
  type NodeSummaries,
} from './report.js';

/** The part of a `$SRV.STATS` answer (ADR-32) the inventory reads. */
const SrvStats = z.object({
  name: z.string(),
  id: z.string(),
  version: z.string(),
  metadata: z.record(z.string(), z.string()).nullish(),
  started: z.string(),
  endpoints: z
    .array(z.object({ num_requests: z.number(), num_errors: z.number(), last_error: z.string().nullish() }))
    .nullish(),
});

export interface GatherOptions {
  /** Only these nodes (each is listed even when no instance answered discovery). */
  nodes?: readonly string[] | undefined;
  /** Discovery ends after this long without a new answer. */
  discoveryQuietMs: number;
  /** Bound of each request, discovery's first answer included. */
  timeoutMs: number;
  /** Read every list and join per container (detail); otherwise each service's summary only. */
  containers?: boolean | undefined;
  log: Logger;
}

function instanceOf(data: Uint8Array): InstanceStats | undefined {
  let raw: unknown;
  try {
    raw = decodeJson(data);
  } catch {
    return undefined;
  }
  const r = SrvStats.safeParse(raw);
  if (!r.success || !isSysboxService(r.data.name)) return undefined;
  const node = r.data.metadata?.node;
  if (!node) return undefined;
  const eps = r.data.endpoints ?? [];
  return {
    service: r.data.name,
    id: r.data.id,
    version: r.data.version,
    node,
    started: r.data.started,
    requests: eps.reduce((n, e) => n + e.num_requests, 0),
    errors: eps.reduce((n, e) => n + e.num_errors, 0),
    lastError: eps.map((e) => e.last_error ?? '').find((e) => e !== '') ?? '',
  };
}

/**
 * What the inventory reads of each list page: the fields it reports, checked for type on read.
 * Not the contracts' full reply schemas: those re-check every path (normalized, absolute, no
 * control characters), which for 100 nodes of 2,000 containers cost 10 s of CPU here against
 * 3 s for the JSON itself (bench/main.ts); nothing read here reaches a host path or a decision.
 */
const ListPage = z.object({ next: z.string().optional() });
const SubidPage = ListPage.extend({
  mode: z.enum(['shared', 'exclusive']),
  pool: z.object({ uid: z.number(), gid: z.number(), size: z.number() }),
  allocations: z.array(z.object({ id: z.string(), uid: z.number(), gid: z.number(), size: z.number() })),
});
const Holders = z.array(z.string());
const VolPage = ListPage.extend({
  volumes: z.array(z.object({ kind: VolumeKindSchema, id: z.string() })),
  preps: z.array(z.object({ source: z.string(), holders: Holders })),
});
const ShiftfsPage = ListPage.extend({
  supported: z.boolean(),
  supportedOnOverlayfs: z.boolean().optional(),
  marks: z.array(z.object({ markpoint: z.string(), holders: Holders })),
});
const RootfsPage = ListPage.extend({
  clones: z.array(
    z.object({
      id: z.string(),
      cloneRootfs: z.string(),
      mounted: z.boolean(),
      chowned: z.boolean(),
      containerStopped: z.boolean(),
    }),
  ),
  uppers: z.array(z.object({ id: z.string(), shifted: z.boolean() })),
});

/** Every page of one node's list, each checked against `page`; a failed page fails the list. */
async function readList<P extends typeof ListPage>(
  nc: NatsConnection,
  contract: Contract,
  node: string,
  request: RequestInputOf<Contract>,
  page: P,
  timeoutMs: number,
): Promise<z.infer<P>[]> {
  const subject = contract.subject(node);
  // The request is the contract's: checked here as the service will check it.
  contract.request.parse(request);
  return allPages(async (cursor) => {
    const msg = await nc.request(
      subject,
      encodeJson({ ...(request as object), ...(cursor === undefined ? {} : { cursor }) }),
      { timeout: timeoutMs },
    );
    const failed = errorFromReply(msg.data, msg.headers);
    if (failed) throw failed;
    const r = page.safeParse(decodeJson(msg.data));
    if (!r.success) throw new SysboxError('internal', `${subject}: unexpected reply: ${r.error.message}`);
    return r.data as z.infer<P>;
  });
}

/** No responder on the subject: nothing serves it. */
function isNoResponders(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown } | undefined;
  return e?.code === '503' || e?.name === 'NoRespondersError' || /no responders/i.test(String(e?.message));
}

/** Runs one service's read, its failure recorded in `failures` (what: 'list' or 'summary'). */
function attempter(failures: NodeLists['failures'], what: string, node: string, log: Logger) {
  return async (service: ServiceName, read: () => Promise<void>): Promise<void> => {
    try {
      await read();
    } catch (err) {
      failures[service] = isNoResponders(err)
        ? `no instance answered its ${what}`
        : SysboxError.from(err).message;
      log.debug({ err, node, service }, `${what} failed`);
    }
  };
}

/** One node's summary of one service: one request, its reply checked against the contract. */
async function readSummary<C extends Contract>(
  nc: NatsConnection,
  contract: C,
  node: string,
  timeoutMs: number,
): Promise<z.infer<C['reply']>> {
  const subject = contract.subject(node);
  const msg = await nc.request(subject, encodeJson({}), { timeout: timeoutMs });
  const failed = errorFromReply(msg.data, msg.headers);
  if (failed) throw failed;
  // Counts only, a few hundred bytes: the contract's own schema checks it.
  const r = contract.reply.safeParse(decodeJson(msg.data));
  if (!r.success) throw new SysboxError('internal', `${subject}: unexpected reply: ${r.error.message}`);
  return r.data as z.infer<C['reply']>;
}

async function summarizeNode(nc: NatsConnection, node: string, opts: GatherOptions): Promise<NodeSummaries> {
  const out: NodeSummaries = { failures: {} };
  const t = opts.timeoutMs;
  const attempt = attempter(out.failures, 'summary', node, opts.log);
  await Promise.all([
    attempt('subid', async () => void (out.subid = await readSummary(nc, subidSummary, node, t))),
    attempt('vol', async () => void (out.vol = await readSummary(nc, volSummary, node, t))),
    attempt('shiftfs', async () => void (out.shiftfs = await readSummary(nc, shiftfsSummary, node, t))),
    attempt('rootfs', async () => void (out.rootfs = await readSummary(nc, rootfsSummary, node, t))),
  ]);
  return out;
}

async function listNode(nc: NatsConnection, node: string, opts: GatherOptions): Promise<NodeLists> {
  const out: NodeLists = { failures: {} };
  const t = opts.timeoutMs;
  const attempt = attempter(out.failures, 'list', node, opts.log);
  await Promise.all([
    attempt('subid', async () => {
      const pages = await readList(nc, subidList, node, { limit: SUBID_LIST_MAX_LIMIT }, SubidPage, t);
      out.subid = {
        mode: pages[0]!.mode,
        pool: pages[0]!.pool,
        allocations: pages.flatMap((p) => p.allocations),
      };
    }),
    attempt('vol', async () => {
      const pages = await readList(nc, volList, node, { limit: LIST_MAX_LIMIT, sizes: false }, VolPage, t);
      out.vol = { volumes: pages.flatMap((p) => p.volumes), preps: pages.flatMap((p) => p.preps) };
    }),
    attempt('shiftfs', async () => {
      const pages = await readList(nc, shiftfsList, node, { limit: LIST_MAX_LIMIT }, ShiftfsPage, t);
      out.shiftfs = {
        supported: pages[0]!.supported,
        supportedOnOverlayfs: pages[0]!.supportedOnOverlayfs,
        marks: pages.flatMap((p) => p.marks),
      };
    }),
    attempt('rootfs', async () => {
      const pages = await readList(nc, rootfsList, node, { limit: LIST_MAX_LIMIT }, RootfsPage, t);
      out.rootfs = { clones: pages.flatMap((p) => p.clones), uppers: pages.flatMap((p) => p.uppers) };
    }),
  ]);
  return out;
}

export async function gatherFleet(nc: NatsConnection, opts: GatherOptions): Promise<FleetSnapshot> {
  const wanted = opts.nodes && opts.nodes.length > 0 ? new Set(opts.nodes) : undefined;
  const lists = new Map<string, Promise<NodeLists | NodeSummaries>>();
  const read = opts.containers ? listNode : summarizeNode;
  const startNode = (node: string): void => {
    if (!lists.has(node) && (!wanted || wanted.has(node))) lists.set(node, read(nc, node, opts));
  };
  for (const node of wanted ?? []) startNode(node);

  const instances: InstanceStats[] = [];
  try {
    const answers = await nc.requestMany('$SRV.STATS', undefined, {
      strategy: 'stall',
      stall: opts.discoveryQuietMs,
      maxWait: opts.timeoutMs,
    });
    for await (const msg of answers) {
      const inst = instanceOf(msg.data);
      if (!inst || (wanted && !wanted.has(inst.node))) continue;
      instances.push(inst);
      startNode(inst.node);
    }
  } catch (err) {
    if (!isNoResponders(err)) {
      // Lists already started still run: wait for them so nothing is left in flight.
      await Promise.allSettled(lists.values());
      throw new SysboxError(
        'unavailable',
        `service discovery ($SRV.STATS) failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
  const done = await Promise.all([...lists].map(async ([node, p]) => [node, await p] as const));
  return opts.containers
    ? { instances, lists: new Map(done as [string, NodeLists][]) }
    : { instances, lists: new Map(), summaries: new Map(done as [string, NodeSummaries][]) };
}
