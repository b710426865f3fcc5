/**
 * Simulated sysbox nodes for the fleet's test and bench: a node's four services answering `$SRV`
 * and their list and summary subjects with generated holdings, on a real nats-server.
 *
 * - `serveSimNode`: each service through service-kit's `serve()` on its own identity's
 *   connection, so requests and replies go through the contracts' schemas (the test);
 * - `startRawSimNode`: `$SRV` from the kit, list pages and the summary encoded once at start and
 *   answered as bytes, so a bench of 100 nodes times the inventory, not 400 simulated services'
 *   encoding.
 */
import { createHash } from 'node:crypto';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  LIST_MAX_LIMIT,
  SUBID_BLOCK,
  VOLUME_KINDS,
  rootfsList,
  rootfsService,
  rootfsSummary,
  shiftfsList,
  shiftfsService,
  shiftfsSummary,
  subidList,
  subidService,
  subidSummary,
  volList,
  volService,
  volSummary,
  type Contract,
  type ReplyOf,
  type ServiceContract,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import {
  encodeJson,
  handle,
  pageOf,
  serve,
  startMicroService,
  type MicroService,
} from '@sysbox-mgr-ts/service-kit';
import type { Logger } from 'pino';

const AT = '2026-12-01T00:00:00.000Z';

/** What a simulated node holds: every list's full content. */
export interface SimNode {
  node: string;
  subid: Omit<ReplyOf<typeof subidList>, 'next'>;
  vol: Omit<ReplyOf<typeof volList>, 'next'>;
  shiftfs: Omit<ReplyOf<typeof shiftfsList>, 'next'>;
  rootfs: Omit<ReplyOf<typeof rootfsList>, 'next'>;
}

/** A docker-like 64-hex container id, the same for the same node and index. */
export function simContainerId(node: string, i: number): string {
  return createHash('sha256').update(`${node}/${i}`).digest('hex');
}

/**
 * A node with `containers` containers: each a subid range and a docker volume; every 4th a
 * kubelet volume too, every 2nd a rootfs clone, every 5th a shifted upper dir, every 10th a
 * shiftfs mark, every 20th a prepared mount source.
 */
export function simNode(node: string, containers: number): SimNode {
  const ids = Array.from({ length: containers }, (_, i) => simContainerId(node, i));
  const uid = (i: number) => 165536 + i * SUBID_BLOCK;
  const volume = (kind: VolumeKind, id: string, i: number) => ({
    kind,
    id,
    path: `/var/lib/sysbox/${kind}/${id}`,
    mountpoint: kind === 'docker' ? '/var/lib/docker' : '/var/lib/kubelet',
    syncOutTarget: `/var/lib/docker/overlay2/${id}/merged/var/lib/${kind}`,
    uid: uid(i),
    gid: uid(i),
    chownOnSync: false,
    sizeBytes: 0,
    createdAt: AT,
  });
  return {
    node,
    subid: {
      mode: 'exclusive',
      pool: { uid: 165536, gid: 165536, size: 4096 * SUBID_BLOCK },
      allocations: ids.map((id, i) => ({ id, uid: uid(i), gid: uid(i), size: SUBID_BLOCK, allocatedAt: AT })),
    },
    vol: {
      volumes: ids.flatMap((id, i) => [
        volume('docker', id, i),
        ...(i % 4 === 0 ? [volume('kubelet', id, i)] : []),
      ]),
      preps: ids.flatMap((id, i) =>
        i % 20 === 0
          ? [
              {
                id,
                source: `/srv/shared/${id}`,
                exclusive: true,
                uidOffset: uid(i),
                gidOffset: uid(i),
                holders: [id],
              },
            ]
          : [],
      ),
    },
    shiftfs: {
      supported: true,
      supportedOnOverlayfs: false,
      marks: ids.flatMap((id, i) =>
        i % 10 === 0
          ? [
              {
                source: `/var/lib/sysbox/shiftfs/${id}`,
                markpoint: `/var/lib/sysbox/shiftfs/${id}`,
                createdMarkpoint: true,
                holders: [id],
                state: 'mounted' as const,
                markedAt: AT,
              },
            ]
          : [],
      ),
    },
    rootfs: {
      clones: ids.flatMap((id, i) =>
        i % 2 === 0
          ? [
              {
                id,
                origRootfs: `/var/lib/docker/overlay2/${id}/merged`,
                cloneRootfs: `/var/lib/sysbox/rootfs/${id}/merged`,
                origWorkDir: `/var/lib/docker/overlay2/${id}/work`,
                uidOffset: uid(i),
                gidOffset: uid(i),
                chowned: true,
                containerStopped: false,
                mounted: true,
                createdAt: AT,
              },
            ]
          : [],
      ),
      uppers: ids.flatMap((id, i) =>
        i % 5 === 0
          ? [
              {
                id,
                upperDir: `/var/lib/docker/overlay2/${id}/diff`,
                uidOffset: uid(i),
                gidOffset: uid(i),
                shifted: true,
              },
            ]
          : [],
      ),
    },
  };
}

type Entry = { key: string; value: unknown; field: string };

/** Each list as one keyed stream, as the real services page theirs. */
function streams(sim: SimNode): Record<'subid' | 'vol' | 'shiftfs' | 'rootfs', Entry[]> {
  const keyed = (field: string, items: readonly unknown[], key: (x: never) => string) =>
    items.map((value) => ({ key: key(value as never), value, field }));
  return {
    subid: keyed('allocations', sim.subid.allocations, (a: { id: string }) => a.id),
    vol: [
      ...keyed('preps', sim.vol.preps, (p: { source: string }) => `p/${p.source}`),
      ...keyed('volumes', sim.vol.volumes, (v: { kind: string; id: string }) => `v/${v.kind}/${v.id}`),
    ],
    shiftfs: keyed('marks', sim.shiftfs.marks, (m: { markpoint: string }) => m.markpoint),
    rootfs: [
      ...keyed('clones', sim.rootfs.clones, (c: { id: string }) => `c/${c.id}`),
      ...keyed('uppers', sim.rootfs.uppers, (u: { id: string }) => `u/${u.id}`),
    ],
  };
}

/** One page of a list: the fixed fields, the page's entries by field, and `next`. */
function pageReply(
  fixed: Record<string, unknown>,
  fields: readonly string[],
  entries: readonly Entry[],
  req: { cursor?: string | undefined; limit?: number | undefined },
): Record<string, unknown> {
  const page = pageOf(entries, (e) => e.key, req);
  const reply: Record<string, unknown> = { ...fixed };
  for (const f of fields) reply[f] = page.items.filter((e) => e.field === f).map((e) => e.value);
  if (page.next !== undefined) reply.next = page.next;
  return reply;
}

const LISTS = [
  {
    svc: subidService,
    list: subidList as Contract,
    summary: subidSummary as Contract,
    name: 'subid',
    fields: ['allocations'],
  },
  {
    svc: volService,
    list: volList as Contract,
    summary: volSummary as Contract,
    name: 'vol',
    fields: ['volumes', 'preps'],
  },
  {
    svc: shiftfsService,
    list: shiftfsList as Contract,
    summary: shiftfsSummary as Contract,
    name: 'shiftfs',
    fields: ['marks'],
  },
  {
    svc: rootfsService,
    list: rootfsList as Contract,
    summary: rootfsSummary as Contract,
    name: 'rootfs',
    fields: ['clones', 'uppers'],
  },
] as const;

/** What each service's `summary` answers for the node: its holdings counted. */
export function simSummary(sim: SimNode, name: (typeof LISTS)[number]['name']): Record<string, unknown> {
  switch (name) {
    case 'subid':
      return {
        mode: sim.subid.mode,
        pool: sim.subid.pool,
        allocations: sim.subid.allocations.length,
        idsClaimed: sim.subid.allocations.reduce((n, a) => n + a.size, 0),
      };
    case 'vol':
      return {
        volumes: Object.fromEntries(
          VOLUME_KINDS.map((k) => [k, sim.vol.volumes.filter((v) => v.kind === k).length]),
        ),
        preps: sim.vol.preps.length,
      };
    case 'shiftfs':
      return {
        supported: sim.shiftfs.supported,
        supportedOnOverlayfs: sim.shiftfs.supportedOnOverlayfs ?? false,
        marks: sim.shiftfs.marks.length,
      };
    case 'rootfs':
      return { clones: sim.rootfs.clones.length, uppers: sim.rootfs.uppers.length };
  }
}

function fixedFields(sim: SimNode, name: (typeof LISTS)[number]['name']): Record<string, unknown> {
  if (name === 'subid') return { mode: sim.subid.mode, pool: sim.subid.pool };
  if (name === 'shiftfs')
    return { supported: sim.shiftfs.supported, supportedOnOverlayfs: sim.shiftfs.supportedOnOverlayfs };
  return {};
}

/**
 * Serves a simulated node through `serve()`: every endpoint of each service (the kit refuses a
 * contract without a handler); the lists and summaries answer the node's holdings, every other
 * operation fails with `internal`. `connect(svc)` gives each service its connection (its own identity).
 */
export async function serveSimNode(
  sim: SimNode,
  connect: (svc: ServiceContract) => Promise<NatsConnection>,
  opts: { version: string; log: Logger; only?: readonly string[] },
): Promise<MicroService[]> {
  const s = streams(sim);
  const out: MicroService[] = [];
  for (const l of LISTS) {
    if (opts.only && !opts.only.includes(l.svc.name)) continue;
    const nc = await connect(l.svc);
    const bindings = l.svc.contracts.map((c) =>
      c === l.list
        ? // The reply's schema checks it (serve() validates every reply) against the contract.
          handle(
            c,
            async (req) =>
              pageReply(
                fixedFields(sim, l.name),
                l.fields,
                s[l.name],
                req as { cursor?: string; limit?: number },
              ) as never,
          )
        : c === l.summary
          ? handle(c, async () => simSummary(sim, l.name) as never)
          : handle(c, () => Promise.reject(new Error('not simulated'))),
    );
    out.push(serve({ nc, service: l.svc, node: sim.node, version: opts.version, log: opts.log, bindings }));
  }
  return out;
}

/**
 * A simulated node on one connection: `$SRV` from the kit, each list's pages (at the page size
 * the inventory asks) and each summary encoded once here, the pages answered by cursor.
 */
export function startRawSimNode(nc: NatsConnection, sim: SimNode, version: string): MicroService[] {
  const s = streams(sim);
  return LISTS.map((l) => {
    const pages = new Map<string, Uint8Array>();
    let cursor: string | undefined;
    do {
      const reply = pageReply(fixedFields(sim, l.name), l.fields, s[l.name], {
        cursor,
        limit: LIST_MAX_LIMIT,
      });
      pages.set(cursor ?? '', encodeJson(reply));
      cursor = reply.next as string | undefined;
    } while (cursor !== undefined);
    const summary = encodeJson(simSummary(sim, l.name));
    return startMicroService(nc, {
      name: l.svc.name,
      version,
      description: l.svc.description,
      metadata: { node: sim.node },
      queue: l.svc.name,
      endpoints: [
        {
          name: l.list.endpoint,
          subject: l.list.subject(sim.node),
          handler: async (msg) => {
            const req = JSON.parse(new TextDecoder().decode(msg.data)) as { cursor?: string };
            const page = pages.get(req.cursor ?? '');
            if (!page) return { error: 'unknown cursor' };
            msg.respond(page);
            return {};
          },
        },
        {
          name: l.summary.endpoint,
          subject: l.summary.subject(sim.node),
          handler: async (msg) => {
            msg.respond(summary);
            return {};
          },
        },
      ],
    });
  });
}
