/**
 * Issue #28 (dashboard): every series deploy/grafana/sysbox-dashboard.json queries is one the
 * daemons export, and every label it groups, filters or names a legend by exists.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { METRICS } from './index.js';
import { createMetricsRegistry } from './prometheus.js';

const dashboardPath = new URL('../../../deploy/grafana/sysbox-dashboard.json', import.meta.url);

/** Every PromQL expression in the dashboard: panel targets and template queries. */
function expressions(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) expressions(n, out);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if ((k === 'expr' || k === 'definition') && typeof v === 'string') out.push(v);
      else expressions(v, out);
    }
  }
  return out;
}

function legends(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) legends(n, out);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'legendFormat' && typeof v === 'string') out.push(v);
      else legends(v, out);
    }
  }
  return out;
}

/** The series names a registry exports: a histogram as its _bucket, _count and _sum series. */
async function exportedSeries(): Promise<Set<string>> {
  const families = await createMetricsRegistry().registry.getMetricsAsJSON();
  const out = new Set<string>();
  for (const f of families) {
    if (String(f.type) === 'histogram') for (const s of ['_bucket', '_count', '_sum']) out.add(f.name + s);
    else out.add(f.name);
  }
  return out;
}

/** Labels a query may use: the catalogue's, the scrape configuration's target labels, and `le`. */
const LABELS = new Set([...Object.values(METRICS).flatMap((d) => d.labels), 'node', 'instance', 'job', 'le']);

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as unknown;
  const exprs = expressions(dashboard);

  it('queries only series the daemons export', async () => {
    const exported = await exportedSeries();
    const queried = new Set(exprs.flatMap((e) => e.match(/\b(?:sysbox|process|nodejs)_[a-z0-9_]+\b/g) ?? []));
    expect(queried.size).toBeGreaterThan(15);
    expect([...queried].filter((name) => !exported.has(name))).toEqual([]);
    // What an operator looks at first: request rate, errors, latency, pool and bucket fill.
    for (const name of [
      'sysbox_nats_requests_total',
      'sysbox_nats_request_duration_seconds_bucket',
      'sysbox_grpc_requests_total',
      'sysbox_grpc_request_duration_seconds_bucket',
      'sysbox_kv_bucket_fill_ratio',
      'sysbox_subid_pool_usage_ratio',
    ])
      expect(queried).toContain(name);
  });

  it('groups, filters and names legends only by labels that exist', () => {
    const used = new Set<string>();
    for (const e of exprs) {
      for (const m of e.matchAll(/\bby \(([^)]*)\)/g)) for (const l of m[1]!.split(',')) used.add(l.trim());
      for (const m of e.matchAll(/\{([^}]*)\}/g))
        for (const sel of m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) used.add(sel[1]!);
    }
    for (const l of legends(dashboard)) for (const m of l.matchAll(/\{\{(\w+)\}\}/g)) used.add(m[1]!);
    expect([...used].filter((l) => !LABELS.has(l))).toEqual([]);
  });
});
