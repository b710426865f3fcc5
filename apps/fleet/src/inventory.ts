/**
 * Reads the fleet off the bus with read-only requests only: one `$SRV.STATS` that every instance
 * of every service answers (name, version, node, start time, counts), and each node's four list
 * subjects, read page by page to the end. A node's lists start as soon as its first instance
 * answers discovery (or at once for a node named with --node), all nodes at the same time, so the
 * whole inventory takes about the time of the slowest node's lists, not their sum.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import {
  LIST_MAX_LIMIT,
  SUBID_LIST_MAX_LIMIT,
  SysboxError,
  VolumeKindSchema,
  rootfsList,
  shiftfsList,
  subidList,
  volList,
  type Contract,
  type RequestInputOf,
  type ServiceName,
} from '@sysbox-mgr-ts/contracts';
import { allPages, decodeJson, encodeJson, errorFromReply } from '@sysbox-mgr-ts/service-kit';
import type { Logger } from 'pino';
import { z } from 'zod';
import { isSysboxService, type FleetSnapshot, type InstanceStats, type NodeLists } from './report.js';

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

async function listNode(nc: NatsConnection, node: string, opts: GatherOptions): Promise<NodeLists> {
  const out: NodeLists = { failures: {} };
  const t = opts.timeoutMs;
  const attempt = async (service: ServiceName, read: () => Promise<void>): Promise<void> => {
    try {
      await read();
    } catch (err) {
      out.failures[service] = isNoResponders(err)
        ? 'no instance answered its list'
        : SysboxError.from(err).message;
      opts.log.debug({ err, node, service }, 'list failed');
    }
  };
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
  const lists = new Map<string, Promise<NodeLists>>();
  const startNode = (node: string): void => {
    if (!lists.has(node) && (!wanted || wanted.has(node))) lists.set(node, listNode(nc, node, opts));
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
  return { instances, lists: new Map(done) };
}
