/**
 * Issue #28 (metrics): the gateway's gRPC methods counted by status and timed, its container table
 * and bucket exported, scraped over HTTP after known calls on its real unix socket.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import type { NatsConnection } from '@nats-io/nats-core';
import { GATEWAY_BUCKET } from '@sysbox-mgr-ts/contracts';
import { scrape } from '@sysbox-mgr-ts/metrics/testing';
import {
  commonOptions,
  createLogger,
  parseConfig,
  serveMetrics,
  type MetricsEndpoint,
} from '@sysbox-mgr-ts/service-kit';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeServices, type FakeServices } from '../test/fake-services.js';
import { gatewayOptions } from './flags.js';
import { startGateway, type Gateway, type GatewaySettings } from './gateway.js';
import { grpcClient, rpc, statusOf, type GrpcClient } from '../test/test-support.js';

const log = createLogger({
  service: 'gw-metrics-test',
  node: 't',
  version: '0',
  level: 'silent',
  destination: new Writable({ write: (_c, _e, cb) => cb() }),
});

describe('gateway metrics', () => {
  let ns: NatsServer;
  let nc: NatsConnection;
  let work: string;
  let metrics: MetricsEndpoint;
  let fakes: FakeServices;
  let gw: Gateway;
  let client: GrpcClient;
  const node = 'gwm';

  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true });
    nc = await ns.connect();
    work = await mkdtemp(join(tmpdir(), 'gw-metrics-'));
    await writeFile(join(work, 'subid'), `sysbox:165536:${2 ** 28}\n`);
    const parsed = parseConfig(
      { ...commonOptions, ...gatewayOptions },
      [
        '--node',
        node,
        '--socket',
        join(work, 'run', 'sysmgr.sock'),
        '--subuid-file',
        join(work, 'subid'),
        '--subgid-file',
        join(work, 'subid'),
      ],
      {},
    );
    if ('help' in parsed) throw new Error('help');
    metrics = await serveMetrics('127.0.0.1:0', log);
    fakes = startFakeServices(nc, node, log, { only: ['subid'] });
    gw = await startGateway({
      nc,
      settings: parsed.config as GatewaySettings,
      log,
      metrics: metrics.forApp('gateway'),
      facts: {
        kernelRelease: '6.1.0-test',
        hostDistro: 'debian',
        hostKernelHdrPath: '/usr/src/linux-headers-6.1.0-test',
        linuxHeaderMounts: [],
        libModMounts: [],
        idMapMountOk: true,
        overlayfsOnIDMapMountOk: true,
        binfmtMiscNamespaced: true,
      },
    });
    client = grpcClient(join(work, 'run', 'sysmgr.sock'));
  });
  afterAll(async () => {
    client?.close();
    await gw?.stop();
    await fakes?.stopAll();
    await metrics?.stop();
    await nc?.drain();
    await ns?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const register = (id: string) =>
    rpc(client, 'Register', { id, rootfs: work, userns: '', netns: '', uidMappings: [], gidMappings: [] });

  it('counts each method by gRPC status, times it, and exports the container table', async () => {
    await register('m1');
    await register('m2');
    await rpc(client, 'SubidAlloc', { id: 'm1', size: 65536 });
    const failed = await statusOf(rpc(client, 'SubidAlloc', { id: 'not-registered', size: 65536 }));
    expect(failed).toBeDefined();
    const failedName = status[failed!.code]!;

    const s = await scrape(metrics.address);
    const reg = { app: 'gateway', method: 'Register' };
    const sub = { app: 'gateway', method: 'SubidAlloc' };
    expect(s.type('sysbox_grpc_requests_total')).toBe('counter');
    expect(s.type('sysbox_grpc_request_duration_seconds')).toBe('histogram');
    expect(s.type('sysbox_grpc_requests_in_flight')).toBe('gauge');
    expect(s.sum('sysbox_grpc_requests_total', { ...reg, code: 'OK' })).toBe(2);
    expect(s.sum('sysbox_grpc_requests_total', { ...sub, code: 'OK' })).toBe(1);
    expect(s.sum('sysbox_grpc_requests_total', { ...sub, code: failedName })).toBe(1);
    expect(s.sum('sysbox_grpc_request_duration_seconds_count', sub)).toBe(2);
    expect(s.sum('sysbox_grpc_requests_in_flight')).toBe(0);
    expect(s.sum('sysbox_containers', { app: 'gateway' })).toBe(2);

    const bucket = { app: 'gateway', bucket: GATEWAY_BUCKET };
    // Each Register creates the container's record.
    expect(
      s.sum('sysbox_kv_operation_duration_seconds_count', { ...bucket, op: 'create' }),
    ).toBeGreaterThanOrEqual(2);
    expect(s.sum('sysbox_kv_bucket_bytes', bucket)).toBeGreaterThan(0);
    expect(s.text).not.toMatch(/not-registered|\bm1\b|\bm2\b/);
  });
});
