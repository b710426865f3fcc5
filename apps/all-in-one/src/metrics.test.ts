/**
 * Issue #28 (metrics): all five apps in one process serve one /metrics endpoint, one registry,
 * each app's series under its own `app` label.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  GATEWAY_BUCKET,
  rootfsList,
  rootfsService,
  shiftfsList,
  shiftfsService,
  subidList,
  subidService,
  volList,
  volService,
} from '@sysbox-mgr-ts/contracts';
import { scrape } from '@sysbox-mgr-ts/metrics/testing';
import {
  silentLogger,
  createServiceClient,
  serveMetrics,
  type MetricsEndpoint,
} from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configure, startApps, type StartedApps } from './all-in-one.js';

const log = silentLogger();

describe('all-in-one metrics', () => {
  const node = 'aio';
  const nats = useNatsServer({ jetstream: true, auth: { nodes: [node] } });
  let dir: string;
  let metrics: MetricsEndpoint;
  let running: StartedApps;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aio-metrics-'));
    const subuid = join(dir, 'subuid');
    await writeFile(subuid, 'alice:100000:65536\n');
    const plan = configure(
      [
        '--nats-url',
        nats.ns.url,
        '--creds-dir',
        dirname(nats.ns.credentials('operator')),
        '--node',
        node,
        '--data-root',
        join(dir, 'data'),
        '--metrics-address',
        '127.0.0.1:0',
        '--subuid-file',
        subuid,
        '--subgid-file',
        subuid,
        '--login-defs',
        join(dir, 'no-login.defs'),
        '--allowed-rootfs-roots',
        dir,
        '--no-modprobe',
        '--socket',
        join(dir, 'run', 'sysmgr.sock'),
      ],
      {},
    );
    expect(plan.metricsAddress).toBe('127.0.0.1:0');
    metrics = await serveMetrics(plan.metricsAddress!, log);
    running = await startApps(plan, log, '0', metrics);
  }, 60_000);
  afterAll(async () => {
    await running?.stop();
    await metrics?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves every app from one endpoint, each under its own app label', async () => {
    const nc = await nats.ns.connect('operator');
    try {
      const client = createServiceClient(nc, { node, log });
      await client.call(subidList, {});
      await client.call(volList, {});
      await client.call(shiftfsList, {});
      await client.call(rootfsList, {});
    } finally {
      await nc.drain();
    }
    const s = await scrape(metrics.address);
    // The gateway asked shiftfs-mgr's list once at its start (ShiftfsOk), before ours.
    for (const [app, service, list, calls] of [
      ['subid-allocator', subidService, subidList, 1],
      ['vol-mgr', volService, volList, 1],
      ['shiftfs-mgr', shiftfsService, shiftfsList, 2],
      ['rootfs-cloner', rootfsService, rootfsList, 1],
    ] as const) {
      const labels = { app, service: service.name, endpoint: list.endpoint, code: 'ok' };
      expect(s.sum('sysbox_nats_requests_total', labels), app).toBe(calls);
      expect(s.samples('sysbox_kv_bucket_bytes', { app, bucket: service.bucket }), app).toHaveLength(1);
    }
    expect(s.samples('sysbox_kv_bucket_bytes', { app: 'gateway', bucket: GATEWAY_BUCKET })).toHaveLength(1);
    expect(s.sum('sysbox_containers', { app: 'gateway' })).toBe(0);
    expect(s.samples('sysbox_volumes', { app: 'vol-mgr' }).length).toBeGreaterThan(0);
    expect(s.samples('sysbox_rootfs_clones', { app: 'rootfs-cloner' })).toHaveLength(1);
    expect(s.samples('sysbox_shiftfs_marks', { app: 'shiftfs-mgr' })).toHaveLength(1);
    expect(s.sum('sysbox_subid_pool_ids', { app: 'subid-allocator' })).toBe(65536);
    // One registry: the process's own metrics once, not once per app.
    expect(s.samples('process_cpu_seconds_total')).toHaveLength(1);
  });
});
