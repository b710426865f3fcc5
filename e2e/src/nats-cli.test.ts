/** Scenario 5: the services as an operator meets them with the NATS CLI. */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { subidAlloc, subidList, volList, shiftfsList, rootfsList } from '@sysbox-mgr-ts/contracts';
import { rawRequest } from './raw-nats.js';
import { SERVICE_NAMES, startSystem, type System } from './harness.js';

describe('services answer plain NATS requests', () => {
  let sys: System;
  beforeAll(async () => {
    sys = await startSystem({ apps: ['subid-allocator', 'vol-mgr', 'shiftfs-mgr', 'rootfs-cloner'] });
  });
  afterAll(async () => {
    await sys?.stop();
  });
  const showLogs = () =>
    onTestFailed(() => {
      process.stderr.write(sys.logs());
    });

  it('each service answers `nats req <subject> <json>` with plain JSON', async () => {
    showLogs();
    for (const c of [subidList, volList, shiftfsList, rootfsList]) {
      const r = await rawRequest(sys.natsPort, c.subject(sys.node), '{}', sys.credentials('monitor'));
      expect(r.headers['Nats-Service-Error-Code'], c.subject(sys.node)).toBeUndefined();
      expect(c.reply.safeParse(JSON.parse(r.body)).success, r.body).toBe(true);
    }
    const alloc = await rawRequest(
      sys.natsPort,
      subidAlloc.subject(sys.node),
      '{"id":"c1","size":65536}',
      sys.credentials('operator'),
    );
    expect(JSON.parse(alloc.body)).toMatchObject({ size: 65536 });
  });

  it('a malformed request gets a typed error, and an unknown subject no responders', async () => {
    showLogs();
    const bad = await rawRequest(
      sys.natsPort,
      subidAlloc.subject(sys.node),
      '{"id":"../../etc","size":65536}',
      sys.credentials('operator'),
    );
    expect(bad.headers['Nats-Service-Error-Code']).toBe('400');
    expect(JSON.parse(bad.body).error.code).toBe('invalid-request');
    const notJson = await rawRequest(
      sys.natsPort,
      volList.subject(sys.node),
      'not json',
      sys.credentials('monitor'),
    );
    expect(JSON.parse(notJson.body).error.code).toBe('invalid-request');
    const nobody = await rawRequest(
      sys.natsPort,
      `sysbox.${sys.node}.nothing.here`,
      '{}',
      sys.credentials('operator'),
    );
    expect(nobody.status).toBe('503');
  });

  it('$SRV.PING finds all four services', async () => {
    const names = new Set<string>();
    const it = await sys.nc.requestMany('$SRV.PING', undefined, { maxWait: 1000 });
    for await (const m of it) names.add((m.json() as { name: string }).name);
    for (const name of Object.values(SERVICE_NAMES)) expect(names).toContain(name);
  });

  it('two replicas of one service share its load', async () => {
    showLogs();
    await sys.start('subid-allocator');
    for (let i = 0; i < 40; i++)
      await rawRequest(sys.natsPort, subidList.subject(sys.node), '{}', sys.credentials('monitor'));
    const counts: number[] = [];
    const it = await sys.nc.requestMany('$SRV.STATS.sysbox-subid', undefined, { maxWait: 1000 });
    for await (const m of it) {
      const stats = m.json() as { endpoints: { name: string; num_requests: number }[] };
      counts.push(stats.endpoints.find((e) => e.name === 'list')!.num_requests);
    }
    expect(counts).toHaveLength(2);
    expect(counts.every((n) => n > 0)).toBe(true);
  });
});
