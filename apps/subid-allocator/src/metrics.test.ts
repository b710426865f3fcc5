/**
 * Issue #28 (metrics): the allocator started through app.ts on a real nats-server, scraped after
 * known traffic; and the daemon as a process, which listens for scrapes only with --metrics-address.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { SUBID_BLOCK, subidAlloc, subidFree, subidService } from '@sysbox-mgr-ts/contracts';
import { listeningPorts, scrape } from '@sysbox-mgr-ts/metrics/testing';
import {
  commonOptions,
  silentLogger,
  createServiceClient,
  decodeJson,
  parseConfig,
  serveMetrics,
  type MetricsEndpoint,
  type Stoppable,
} from '@sysbox-mgr-ts/service-kit';
import { startAppDaemon } from '@sysbox-mgr-ts/test-nats';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subidAllocatorApp } from './app.js';

const log = silentLogger();
const appDir = new URL('..', import.meta.url).pathname;
const POOL_BLOCKS = 16;

describe('subid-allocator metrics', () => {
  const nats = useNatsServer();
  let dir: string;
  let nc: NatsConnection;
  let caller: NatsConnection;
  let app: Stoppable;
  let metrics: MetricsEndpoint;

  const flags = (node: string) => [
    '--node',
    node,
    '--mode',
    'exclusive',
    '--pool-size',
    String(POOL_BLOCKS * SUBID_BLOCK),
    '--subuid-file',
    join(dir, `${node}.subuid`),
    '--subgid-file',
    join(dir, `${node}.subgid`),
    '--login-defs',
    join(dir, 'no-login.defs'),
  ];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'subid-metrics-'));
    metrics = await serveMetrics('127.0.0.1:0', log);
    nc = await nats.ns.connect('subid-allocator');
    caller = await nats.ns.connect('gateway');
    const parsed = parseConfig({ ...commonOptions, ...subidAllocatorApp.options }, flags('m1'), {});
    if ('help' in parsed) throw new Error('help');
    app = await subidAllocatorApp.start({
      config: parsed.config,
      nc,
      log,
      version: '0',
      metrics: metrics.forApp('subid-allocator'),
    });
  });
  afterAll(async () => {
    await app?.stop();
    await metrics?.stop();
    await nc?.drain();
    await caller?.drain();
    await rm(dir, { recursive: true, force: true });
  });

  it('counts requests by endpoint and code, times them, and exports the pool and bucket', async () => {
    const client = createServiceClient(caller, { node: 'm1', log });
    for (const id of ['c1', 'c2', 'c3']) await client.call(subidAlloc, { id, size: SUBID_BLOCK });
    // A bad request reaches the service only past the client's own checks: sent raw.
    const bad = await caller.request(subidAlloc.subject('m1'), 'not json');
    expect(decodeJson(bad.data)).toMatchObject({ error: { code: 'invalid-request' } });
    await expect(client.call(subidFree, { id: 'never-allocated' })).rejects.toMatchObject({
      code: 'not-found',
    });

    const s = await scrape(metrics.address);
    const alloc = { app: 'subid-allocator', service: subidService.name, endpoint: 'alloc' };
    expect(s.type('sysbox_nats_requests_total')).toBe('counter');
    expect(s.type('sysbox_nats_request_duration_seconds')).toBe('histogram');
    expect(s.type('sysbox_nats_requests_in_flight')).toBe('gauge');
    expect(s.sum('sysbox_nats_requests_total', { ...alloc, code: 'ok' })).toBe(3);
    expect(s.sum('sysbox_nats_requests_total', { ...alloc, code: 'invalid-request' })).toBe(1);
    expect(s.sum('sysbox_nats_requests_total', { endpoint: 'free', code: 'not-found' })).toBe(1);
    expect(s.sum('sysbox_nats_request_duration_seconds_count', alloc)).toBe(4);
    expect(s.sum('sysbox_nats_request_duration_seconds_bucket', { ...alloc, le: '+Inf' })).toBe(4);
    expect(s.sum('sysbox_nats_requests_in_flight', alloc)).toBe(0);

    expect(s.sum('sysbox_subid_allocations')).toBe(3);
    expect(s.sum('sysbox_subid_allocated_ids')).toBe(3 * SUBID_BLOCK);
    expect(s.sum('sysbox_subid_pool_ids')).toBe(POOL_BLOCKS * SUBID_BLOCK);
    expect(s.sum('sysbox_subid_pool_usage_ratio')).toBeCloseTo(3 / POOL_BLOCKS);

    const bucket = { app: 'subid-allocator', bucket: subidService.bucket };
    expect(s.type('sysbox_kv_operation_duration_seconds')).toBe('histogram');
    // Each allocation creates its id record and claims a block: at least two creates each.
    expect(
      s.sum('sysbox_kv_operation_duration_seconds_count', { ...bucket, op: 'create' }),
    ).toBeGreaterThanOrEqual(6);
    expect(s.sum('sysbox_kv_bucket_bytes', bucket)).toBeGreaterThan(0);
    expect(s.sum('sysbox_kv_bucket_max_bytes', bucket)).toBe(64 * 1024 * 1024);
    expect(s.sum('sysbox_kv_bucket_fill_ratio', bucket)).toBeGreaterThan(0);
    expect(s.sum('sysbox_kv_bucket_fill_ratio', bucket)).toBeLessThan(1);
    expect(s.type('process_resident_memory_bytes')).toBe('gauge');
    // No container id in any series.
    expect(s.text).not.toMatch(/c1|c2|c3|never-allocated/);
  });

  /** main.ts as a process: resolves once it logged "started", with its log. */
  async function startDaemon(extra: string[]): Promise<{ pid: number; log: string; stop(): Promise<void> }> {
    const d = await startAppDaemon({
      appDir,
      ns: nats.ns,
      identity: 'subid-allocator',
      args: [...flags(`p${extra.length}`), ...extra],
    });
    return { pid: d.pid, log: d.logs(), stop: d.stop };
  }

  it('listens for nothing without --metrics-address, and only there with it', async () => {
    const off = await startDaemon([]);
    try {
      expect(await listeningPorts(off.pid)).toEqual([]);
    } finally {
      await off.stop();
    }
    const on = await startDaemon(['--metrics-address', '127.0.0.1:0']);
    try {
      const url = /"metrics":"http:\/\/(127\.0\.0\.1:(\d+))\/metrics"/.exec(on.log);
      expect(url, on.log).not.toBeNull();
      expect(await listeningPorts(on.pid)).toEqual([Number(url![2])]);
      const s = await scrape(url![1]!);
      expect(s.sum('sysbox_subid_pool_ids', { app: 'subid-allocator' })).toBe(POOL_BLOCKS * SUBID_BLOCK);
    } finally {
      await on.stop();
    }
  });
});
