/**
 * The inventory as data: what the bus answered (a snapshot) turned into one report per node and
 * fleet totals. Pure: no network, no clock (the time is passed in), so it is tested alone.
 */
import {
  ALL_SERVICES,
  VOLUME_KINDS,
  type ReplyOf,
  type ServiceName,
  type SubidRange,
  type VolumeKind,
  type rootfsSummary,
  type shiftfsSummary,
  type subidSummary,
  type volSummary,
} from '@sysbox-mgr-ts/contracts';

/** One running instance of a service, as its `$SRV.STATS` answer describes it. */
export interface InstanceStats {
  service: string;
  id: string;
  version: string;
  node: string;
  started: string;
  requests: number;
  errors: number;
  lastError: string;
}

/**
 * Every page of one node's lists, read to the end: the fields of the contracts' replies the report
 * uses. A service whose list failed has its reason in `failures`.
 */
export interface NodeLists {
  subid?: {
    mode: 'shared' | 'exclusive';
    pool: SubidRange;
    allocations: { id: string; uid: number; gid: number; size: number }[];
  };
  vol?: { volumes: { kind: VolumeKind; id: string }[]; preps: { source: string; holders: string[] }[] };
  shiftfs?: {
    supported: boolean;
    supportedOnOverlayfs?: boolean | undefined;
    marks: { markpoint: string; holders: string[] }[];
  };
  rootfs?: {
    clones: {
      id: string;
      cloneRootfs: string;
      mounted: boolean;
      chowned: boolean;
      containerStopped: boolean;
    }[];
    uppers: { id: string; shifted: boolean }[];
  };
  failures: Partial<Record<ServiceName, string>>;
}

/** One node's four `summary` replies (counts only); a service whose summary failed has its reason in `failures`. */
export interface NodeSummaries {
  subid?: ReplyOf<typeof subidSummary>;
  vol?: ReplyOf<typeof volSummary>;
  shiftfs?: ReplyOf<typeof shiftfsSummary>;
  rootfs?: ReplyOf<typeof rootfsSummary>;
  failures: Partial<Record<ServiceName, string>>;
}

/**
 * What the bus answered: every instance that answered discovery, and each node's lists (detail
 * mode) or, when `summaries` is there, each node's summaries (the default: counts only).
 */
export interface FleetSnapshot {
  instances: InstanceStats[];
  lists: Map<string, NodeLists>;
  summaries?: Map<string, NodeSummaries>;
}

export type Health = 'ok' | 'missing' | 'failing';

export interface ServiceReport {
  /** `$SRV` name: sysbox-subid, sysbox-vol, sysbox-shiftfs, sysbox-rootfs. */
  service: string;
  /** Distinct versions of its instances, sorted. */
  versions: string[];
  replicas: number;
  /** Uptime of its youngest instance (the latest restart), seconds; absent with no instance. */
  uptimeSeconds?: number;
  /** ok: its list answered; missing: no instance answered; failing: its list failed (see problem). */
  health: Health;
  problem?: string;
  /** Requests and errors since each instance started, summed over instances and endpoints. */
  requests: number;
  errors: number;
  instances: { id: string; version: string; started: string; requests: number; errors: number }[];
}

/** What one container holds on its node, joined by container id across the services. */
export interface ContainerHoldings {
  id: string;
  subid?: SubidRange;
  volumes: VolumeKind[];
  clone?: { rootfs: string; mounted: boolean; chowned: boolean; stopped: boolean };
  /** An ID-mapped rootfs whose upper dir is shifted (rootfs-cloner). */
  upperShifted?: boolean;
  /** Markpoints of the shiftfs marks it holds. */
  marks: string[];
  /** Mount sources vol-mgr prepared (chowned) for it. */
  preps: string[];
}

export interface Counts {
  /** Distinct container ids across the lists: detail mode only (summaries do not name containers). */
  containers?: number;
  subidRanges: number;
  volumes: number;
  clones: number;
  upperShifts: number;
  marks: number;
  preps: number;
}

export interface NodeReport {
  node: string;
  services: ServiceReport[];
  /** Detail mode only (--containers). */
  containers?: ContainerHoldings[];
  /** `idsClaimed`: ids in claimed blocks (exclusive mode), from the summary. */
  subid?: { mode: 'shared' | 'exclusive'; pool: SubidRange; idsClaimed?: number };
  shiftfs?: { supported: boolean; supportedOnOverlayfs?: boolean | undefined };
  /** Volumes of each kind that the node holds any of. */
  volumesByKind: Partial<Record<VolumeKind, number>>;
  counts: Counts;
}

export interface FleetReport {
  /** summary: counts from each service's `summary`; containers: every list read and joined. */
  mode: 'summary' | 'containers';
  generatedAt: string;
  nodes: NodeReport[];
  totals: Counts & { nodes: number; serviceInstances: number; servicesNotOk: number };
}

const SERVICE_OF_NAME = new Map<string, ServiceName>(ALL_SERVICES.map((s) => [s.name, s.service]));

/** Whether a `$SRV` name is one of ours. */
export function isSysboxService(name: string): boolean {
  return SERVICE_OF_NAME.has(name);
}

const byString = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function serviceReport(
  name: string,
  service: ServiceName,
  instances: readonly InstanceStats[],
  failures: NodeLists['failures'] | undefined,
  what: 'list' | 'summary',
  now: number,
): ServiceReport {
  const failure = failures ? failures[service] : `its ${what} was not read`;
  const youngest = instances.reduce<number | undefined>((acc, i) => {
    const t = Date.parse(i.started);
    return Number.isNaN(t) ? acc : Math.max(acc ?? t, t);
  }, undefined);
  const health: Health = failure === undefined ? 'ok' : instances.length === 0 ? 'missing' : 'failing';
  return {
    service: name,
    versions: [...new Set(instances.map((i) => i.version))].sort(byString),
    replicas: instances.length,
    ...(youngest === undefined ? {} : { uptimeSeconds: Math.max(0, Math.floor((now - youngest) / 1000)) }),
    health,
    ...(failure === undefined ? {} : { problem: failure }),
    requests: instances.reduce((n, i) => n + i.requests, 0),
    errors: instances.reduce((n, i) => n + i.errors, 0),
    instances: instances
      .map((i) => ({
        id: i.id,
        version: i.version,
        started: i.started,
        requests: i.requests,
        errors: i.errors,
      }))
      .sort((a, b) => byString(a.id, b.id)),
  };
}

/** One entry per container id that anything on the node is held for. */
function holdings(lists: NodeLists | undefined): ContainerHoldings[] {
  const out = new Map<string, ContainerHoldings>();
  const of = (id: string): ContainerHoldings => {
    let h = out.get(id);
    if (!h) out.set(id, (h = { id, volumes: [], marks: [], preps: [] }));
    return h;
  };
  for (const a of lists?.subid?.allocations ?? []) of(a.id).subid = { uid: a.uid, gid: a.gid, size: a.size };
  for (const v of lists?.vol?.volumes ?? []) of(v.id).volumes.push(v.kind);
  for (const p of lists?.vol?.preps ?? []) for (const id of p.holders) of(id).preps.push(p.source);
  for (const c of lists?.rootfs?.clones ?? [])
    of(c.id).clone = {
      rootfs: c.cloneRootfs,
      mounted: c.mounted,
      chowned: c.chowned,
      stopped: c.containerStopped,
    };
  for (const u of lists?.rootfs?.uppers ?? []) of(u.id).upperShifted = u.shifted;
  for (const m of lists?.shiftfs?.marks ?? []) for (const id of m.holders) of(id).marks.push(m.markpoint);
  for (const h of out.values()) {
    h.volumes.sort(byString);
    h.marks.sort(byString);
    h.preps.sort(byString);
  }
  return [...out.values()].sort((a, b) => byString(a.id, b.id));
}

function countsOf(lists: NodeLists | undefined, containers: number): Counts & { containers: number } {
  return {
    containers,
    subidRanges: lists?.subid?.allocations.length ?? 0,
    volumes: lists?.vol?.volumes.length ?? 0,
    clones: lists?.rootfs?.clones.length ?? 0,
    upperShifts: lists?.rootfs?.uppers.length ?? 0,
    marks: lists?.shiftfs?.marks.length ?? 0,
    preps: lists?.vol?.preps.length ?? 0,
  };
}

function summaryCounts(s: NodeSummaries | undefined): Counts {
  return {
    subidRanges: s?.subid?.allocations ?? 0,
    volumes: Object.values(s?.vol?.volumes ?? {}).reduce((n, k) => n + k, 0),
    clones: s?.rootfs?.clones ?? 0,
    upperShifts: s?.rootfs?.uppers ?? 0,
    marks: s?.shiftfs?.marks ?? 0,
    preps: s?.vol?.preps ?? 0,
  };
}

function byKind(kinds: Iterable<[VolumeKind, number]>): Partial<Record<VolumeKind, number>> {
  const out: Partial<Record<VolumeKind, number>> = {};
  for (const [kind, n] of kinds) if (n > 0) out[kind] = (out[kind] ?? 0) + n;
  // In VOLUME_KINDS order, whatever order the replies had.
  return Object.fromEntries(VOLUME_KINDS.flatMap((k) => (out[k] ? [[k, out[k]]] : [])));
}

function add(a: Counts, b: Counts): Counts {
  return {
    ...(a.containers === undefined || b.containers === undefined
      ? {}
      : { containers: a.containers + b.containers }),
    subidRanges: a.subidRanges + b.subidRanges,
    volumes: a.volumes + b.volumes,
    clones: a.clones + b.clones,
    upperShifts: a.upperShifts + b.upperShifts,
    marks: a.marks + b.marks,
    preps: a.preps + b.preps,
  };
}

const ZERO: Counts = {
  subidRanges: 0,
  volumes: 0,
  clones: 0,
  upperShifts: 0,
  marks: 0,
  preps: 0,
};

/** The report of a snapshot taken at `now` (ms since the epoch). */
/** One node in detail mode: its lists joined per container. */
function detailNode(lists: NodeLists | undefined): Omit<NodeReport, 'node' | 'services'> {
  const containers = holdings(lists);
  return {
    containers,
    ...(lists?.subid ? { subid: { mode: lists.subid.mode, pool: lists.subid.pool } } : {}),
    ...(lists?.shiftfs
      ? {
          shiftfs: {
            supported: lists.shiftfs.supported,
            supportedOnOverlayfs: lists.shiftfs.supportedOnOverlayfs,
          },
        }
      : {}),
    volumesByKind: byKind((lists?.vol?.volumes ?? []).map((v) => [v.kind, 1])),
    counts: countsOf(lists, containers.length),
  };
}

/** One node in summary mode: its services' counts. */
function summaryNode(s: NodeSummaries | undefined): Omit<NodeReport, 'node' | 'services'> {
  return {
    ...(s?.subid
      ? {
          subid: {
            mode: s.subid.mode,
            pool: s.subid.pool,
            ...(s.subid.idsClaimed === undefined ? {} : { idsClaimed: s.subid.idsClaimed }),
          },
        }
      : {}),
    ...(s?.shiftfs
      ? { shiftfs: { supported: s.shiftfs.supported, supportedOnOverlayfs: s.shiftfs.supportedOnOverlayfs } }
      : {}),
    volumesByKind: byKind(Object.entries(s?.vol?.volumes ?? {}) as [VolumeKind, number][]),
    counts: summaryCounts(s),
  };
}

/** The report of a snapshot taken at `now` (ms since the epoch). */
export function buildReport(snapshot: FleetSnapshot, now: number): FleetReport {
  const summaries = snapshot.summaries;
  const nodeNames = new Set([
    ...snapshot.lists.keys(),
    ...(summaries?.keys() ?? []),
    ...snapshot.instances.map((i) => i.node),
  ]);
  const nodes = [...nodeNames].sort(byString).map((node): NodeReport => {
    const lists = snapshot.lists.get(node);
    const sums = summaries?.get(node);
    const failures = summaries ? sums?.failures : lists?.failures;
    return {
      node,
      services: ALL_SERVICES.map((svc) =>
        serviceReport(
          svc.name,
          svc.service,
          snapshot.instances.filter((i) => i.node === node && i.service === svc.name),
          failures,
          summaries ? 'summary' : 'list',
          now,
        ),
      ),
      ...(summaries ? summaryNode(sums) : detailNode(lists)),
    };
  });
  const services = nodes.flatMap((n) => n.services);
  return {
    mode: summaries ? 'summary' : 'containers',
    generatedAt: new Date(now).toISOString(),
    nodes,
    totals: {
      nodes: nodes.length,
      serviceInstances: services.reduce((n, s) => n + s.replicas, 0),
      servicesNotOk: services.filter((s) => s.health !== 'ok').length,
      ...nodes.reduce((acc, n) => add(acc, n.counts), summaries ? ZERO : { ...ZERO, containers: 0 }),
    },
  };
}
