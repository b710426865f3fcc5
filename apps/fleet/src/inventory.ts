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
  rootfsList,
  shiftfsList,
  subidList,
  volList,
  type Contract,
  type ReplyOf,
  type RequestInputOf,
  type ServiceName,
} from '@sysbox-mgr-ts/contracts';
import { allPages, createServiceClient, decodeJson, type ServiceClient } from '@sysbox-mgr-ts/service-kit';
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

/** Every page of a list, concatenated by `merge`; a failed page fails the list. */
async function readList<C extends Contract>(
  client: ServiceClient,
  contract: C,
  request: RequestInputOf<C>,
  timeoutMs: number,
): Promise<ReplyOf<C>[]> {
  return allPages(
    (cursor) =>
      client.call(
        contract,
        { ...(request as object), ...(cursor === undefined ? {} : { cursor }) } as RequestInputOf<C>,
        {
          timeoutMs,
        },
      ) as Promise<ReplyOf<C> & { next?: string }>,
  );
}

async function listNode(nc: NatsConnection, node: string, opts: GatherOptions): Promise<NodeLists> {
  // A service that is not there fails at once (no responders), not after a wait.
  const client = createServiceClient(nc, { node, timeoutMs: opts.timeoutMs, waitForResponderMs: 0 });
  const out: NodeLists = { failures: {} };
  const attempt = async (service: ServiceName, read: () => Promise<void>): Promise<void> => {
    try {
      await read();
    } catch (err) {
      const e = SysboxError.from(err);
      out.failures[service] = e.code === 'unavailable' ? 'no instance answered its list' : e.message;
      opts.log.debug({ err, node, service }, 'list failed');
    }
  };
  await Promise.all([
    attempt('subid', async () => {
      const pages = await readList(client, subidList, { limit: SUBID_LIST_MAX_LIMIT }, opts.timeoutMs);
      out.subid = {
        mode: pages[0]!.mode,
        pool: pages[0]!.pool,
        allocations: pages.flatMap((p) => p.allocations),
      };
    }),
    attempt('vol', async () => {
      const pages = await readList(client, volList, { limit: LIST_MAX_LIMIT, sizes: false }, opts.timeoutMs);
      out.vol = { volumes: pages.flatMap((p) => p.volumes), preps: pages.flatMap((p) => p.preps) };
    }),
    attempt('shiftfs', async () => {
      const pages = await readList(client, shiftfsList, { limit: LIST_MAX_LIMIT }, opts.timeoutMs);
      out.shiftfs = {
        supported: pages[0]!.supported,
        supportedOnOverlayfs: pages[0]!.supportedOnOverlayfs,
        marks: pages.flatMap((p) => p.marks),
      };
    }),
    attempt('rootfs', async () => {
      const pages = await readList(client, rootfsList, { limit: LIST_MAX_LIMIT }, opts.timeoutMs);
      out.rootfs = { clones: pages.flatMap((p) => p.clones), uppers: pages.flatMap((p) => p.uppers) };
    }),
  ]);
  return out;
}

/** No instance of anything answered: an empty fleet, not an error. */
function isNoResponders(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown } | undefined;
  return e?.code === '503' || e?.name === 'NoRespondersError' || /no responders/i.test(String(e?.message));
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
