import { describe, expect, it } from 'vitest';
import { METRICS, parseListenAddress, timedShift } from './index.js';
import { createMetricsRegistry, startMetricsServer } from './prometheus.js';
import { parseExposition, scrape } from '../test/scrape.js';

describe('metrics registry', () => {
  it('exports every catalogue metric with its type, and process metrics unprefixed', async () => {
    const s = parseExposition(await createMetricsRegistry().text());
    for (const def of Object.values(METRICS)) {
      expect(def.name).toMatch(/^sysbox_[a-z_]+$/);
      if (def.type === 'counter') expect(def.name).toMatch(/_total$/);
      expect(s.type(def.name), def.name).toBe(def.type);
    }
    expect(s.type('process_cpu_seconds_total')).toBe('counter');
    expect(s.type('nodejs_heap_size_used_bytes')).toBe('gauge');
  });

  it('records requests by outcome, latency and in-flight per app', async () => {
    const reg = createMetricsRegistry();
    const a = reg.forApp('subid-allocator');
    const b = reg.forApp('vol-mgr');
    const f1 = a.natsRequest('sysbox-subid', 'alloc');
    const f2 = a.natsRequest('sysbox-subid', 'alloc');
    const labels = { app: 'subid-allocator', service: 'sysbox-subid', endpoint: 'alloc' };
    expect(parseExposition(await reg.text()).sum('sysbox_nats_requests_in_flight', labels)).toBe(2);
    f1('ok');
    f2('invalid-request');
    b.natsRequest('sysbox-vol', 'create')('ok');
    const s = parseExposition(await reg.text());
    expect(s.sum('sysbox_nats_requests_in_flight', labels)).toBe(0);
    expect(s.sum('sysbox_nats_requests_total', { ...labels, code: 'ok' })).toBe(1);
    expect(s.sum('sysbox_nats_requests_total', { ...labels, code: 'invalid-request' })).toBe(1);
    expect(s.sum('sysbox_nats_request_duration_seconds_count', labels)).toBe(2);
    expect(s.sum('sysbox_nats_requests_total', { app: 'vol-mgr' })).toBe(1);
  });

  it('reads state and bucket gauges on scrape, reusing a reading within the cache time', async () => {
    const reg = createMetricsRegistry({ cacheMs: 60_000 });
    const app = reg.forApp('vol-mgr');
    let reads = 0;
    app.state('volumes', () => (reads++, { docker: 3, kubelet: 1 }));
    app.bucket('sysbox-vol', () => Promise.resolve({ bytes: 1024, maxBytes: 4096, messages: 7 }));
    app.bucket('sysbox-vol', () => Promise.reject(new Error('a second registration is ignored')));
    const s = parseExposition(await reg.text());
    expect(s.sum('sysbox_volumes', { app: 'vol-mgr', kind: 'docker' })).toBe(3);
    expect(s.sum('sysbox_volumes', { kind: 'kubelet' })).toBe(1);
    expect(s.sum('sysbox_kv_bucket_fill_ratio', { bucket: 'sysbox-vol' })).toBe(0.25);
    expect(s.sum('sysbox_kv_bucket_bytes', { bucket: 'sysbox-vol' })).toBe(1024);
    expect(s.sum('sysbox_kv_bucket_messages', { bucket: 'sysbox-vol' })).toBe(7);
    await reg.text();
    expect(reads).toBe(1);
  });

  it('leaves out a series whose reading failed, and tells why', async () => {
    const failures: string[] = [];
    const reg = createMetricsRegistry({ onReadError: (_e, what) => failures.push(what) });
    reg.forApp('rootfs-cloner').state('clones', () => Promise.reject(new Error('no KV')));
    reg.forApp('shiftfs-mgr').state('marks', () => 2);
    const s = parseExposition(await reg.text());
    expect(s.samples('sysbox_rootfs_clones')).toEqual([]);
    expect(s.sum('sysbox_shiftfs_marks')).toBe(2);
    expect(failures).toEqual(['sysbox_rootfs_clones of rootfs-cloner']);
  });

  it('times id shifts by direction and counts the entries changed', async () => {
    const reg = createMetricsRegistry();
    const shift = timedShift(
      (_root: string, _u: number, _g: number) => Promise.resolve({ entries: 5, ms: 1 }),
      reg.forApp('rootfs-cloner'),
    );
    await shift('/x', 65536, 65536);
    await shift('/x', -65536, -65536);
    await shift('/x', 65536, 65536);
    const s = parseExposition(await reg.text());
    expect(s.sum('sysbox_idshift_entries_total', { op: 'shift' })).toBe(10);
    expect(s.sum('sysbox_idshift_duration_seconds_count', { op: 'revert' })).toBe(1);
  });
});

describe('metrics endpoint', () => {
  it('serves /metrics and nothing else', async () => {
    const server = await startMetricsServer('127.0.0.1:0', createMetricsRegistry());
    try {
      expect(server.address).toBe(`127.0.0.1:${server.port}`);
      const s = await scrape(server.address);
      expect(s.type('sysbox_nats_requests_total')).toBe('counter');
      expect((await fetch(`http://${server.address}/`)).status).toBe(404);
      expect((await fetch(`http://${server.address}/metrics`, { method: 'POST' })).status).toBe(405);
    } finally {
      await server.stop();
    }
  });

  it('parses host:port and refuses anything else', () => {
    expect(parseListenAddress('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListenAddress('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListenAddress('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    for (const bad of ['9464', ':9464', '127.0.0.1', '127.0.0.1:99999', 'http://x:1'])
      expect(() => parseListenAddress(bad), bad).toThrow(/not host:port/);
  });
});
