/** The report as text for people (aligned tables) and as JSON for scripts. */
import type { ContainerHoldings, Counts, FleetReport, ServiceReport } from './report.js';

/** 93784 s -> "1d2h", 3725 -> "1h2m", 125 -> "2m5s", 7 -> "7s". */
export function formatUptime(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function alignRows(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

function health(s: ServiceReport): string {
  return s.problem ? `${s.health}: ${s.problem}` : s.health;
}

function clone(c: ContainerHoldings): string {
  if (!c.clone) return '-';
  const flags = [c.clone.mounted ? 'mounted' : 'unmounted', ...(c.clone.chowned ? ['chowned'] : [])];
  return flags.join(',');
}

const list = (xs: readonly string[]): string => (xs.length === 0 ? '-' : xs.join(','));

function countCells(c: Counts): string[] {
  return [c.containers ?? '-', c.subidRanges, c.volumes, c.clones, c.marks, c.preps].map(String);
}

export function formatTable(report: FleetReport): string {
  const services = alignRows([
    ['NODE', 'SERVICE', 'VERSION', 'REPLICAS', 'UPTIME', 'REQUESTS', 'ERRORS', 'HEALTH'],
    ...report.nodes.flatMap((n) =>
      n.services.map((s) => [
        n.node,
        s.service,
        list(s.versions),
        String(s.replicas),
        s.uptimeSeconds === undefined ? '-' : formatUptime(s.uptimeSeconds),
        String(s.requests),
        String(s.errors),
        health(s),
      ]),
    ),
  ]);
  const containers = alignRows([
    ['NODE', 'CONTAINER', 'SUBIDS', 'VOLUMES', 'CLONE', 'MARKS', 'PREPS'],
    ...report.nodes.flatMap((n) =>
      (n.containers ?? []).map((c) => [
        n.node,
        c.id,
        c.subid ? `${c.subid.uid}:${c.subid.gid}/${c.subid.size}` : '-',
        list(c.volumes),
        clone(c),
        list(c.marks),
        list(c.preps),
      ]),
    ),
  ]);
  const t = report.totals;
  const serviceCount = report.nodes.reduce((k, n) => k + n.services.length, 0);
  const totals = alignRows([
    ['NODE', 'CONTAINERS', 'SUBID-RANGES', 'VOLUMES', 'CLONES', 'MARKS', 'PREPS', 'SERVICES-OK'],
    ...report.nodes.map((n) => [
      n.node,
      ...countCells(n.counts),
      `${n.services.filter((s) => s.health === 'ok').length}/${n.services.length}`,
    ]),
    ['TOTAL', ...countCells(t), `${serviceCount - t.servicesNotOk}/${serviceCount}`],
  ]);
  const held =
    t.containers === undefined
      ? `${t.subidRanges} subid range(s) (per container: --containers)`
      : `${t.containers} container(s)`;
  const summary = `${t.nodes} node(s), ${t.serviceInstances} service instance(s), ${held}, ${t.servicesNotOk} service(s) not ok`;
  const detail = report.mode === 'containers' ? [...containers, ''] : [];
  return [...services, '', ...detail, ...totals, '', summary, ''].join('\n');
}

export function formatJson(report: FleetReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
