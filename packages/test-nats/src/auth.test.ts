/**
 * The trust boundary on a real nats-server: who can connect, and what each identity may publish,
 * subscribe to and store. Every refusal here comes from the server itself.
 */
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { nkeyAuthenticator, nkeys } from '@nats-io/nats-core';
import { Kvm } from '@nats-io/kv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNatsServer, type NatsServer } from './index.js';

describe('authenticated nats-server', () => {
  let ns: NatsServer;
  const open: NatsConnection[] = [];
  const as = async (...args: Parameters<NatsServer['connect']>): Promise<NatsConnection> => {
    const nc = await ns.connect(...args);
    open.push(nc);
    return nc;
  };

  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true, auth: { nodes: ['n1'] } });
    const op = await as('operator');
    // Buckets as their services make them.
    await (await new Kvm(op).create('sysbox-subid')).put('n1.c1', '{"base":100000}');
  });
  afterAll(async () => {
    for (const nc of open) await nc.close().catch(() => undefined);
    await ns?.stop();
  });

  it('refuses a connection without credentials', async () => {
    await expect(connect({ servers: ns.url, reconnect: false })).rejects.toThrow(/Authorization Violation/);
  });

  it('refuses a key the configuration does not list', async () => {
    const stranger = nkeys.createUser().getSeed();
    await expect(
      connect({ servers: ns.url, reconnect: false, authenticator: nkeyAuthenticator(stranger) }),
    ).rejects.toThrow(/Authorization Violation/);
  });

  it('lets a service serve its own subjects and nobody else serve them', async () => {
    const vol = await as('vol-mgr');
    const sub = vol.subscribe('sysbox.n1.vol.prep');
    // The gateway, the monitor and another service may not subscribe there: they cannot answer in its place.
    for (const identity of ['gateway', 'monitor', 'subid-allocator'] as const) {
      const nc = await as(identity);
      const hijack = nc.subscribe('sysbox.n1.vol.prep');
      expect(await hijack.closed, identity).toBeInstanceOf(Error);
    }
    // Nor on another node's subjects with this node's key.
    expect(await vol.subscribe('sysbox.n2.vol.prep').closed).toBeInstanceOf(Error);
    sub.unsubscribe();
  });

  it('lets a service reply to what it received, and publish nothing else', async () => {
    const vol = await as('vol-mgr');
    const sub = vol.subscribe('sysbox.n1.vol.list', { callback: (_, m) => void m.respond('{"volumes":[]}') });
    await vol.flush();
    const monitor = await as('monitor');
    expect((await monitor.request('sysbox.n1.vol.list', '{}', { timeout: 2000 })).string()).toBe(
      '{"volumes":[]}',
    );
    await expect(vol.request('sysbox.n1.subid.alloc', '{}', { timeout: 1000 })).rejects.toThrow(
      /Permissions Violation/,
    );
    sub.unsubscribe();
  });

  it('keeps the monitor to discovery and read-only subjects', async () => {
    const monitor = await as('monitor');
    await expect(monitor.request('sysbox.n1.vol.prep', '{}', { timeout: 1000 })).rejects.toThrow(
      /Permissions Violation/,
    );
    await expect(monitor.request('sysbox.n1.subid.alloc', '{}', { timeout: 1000 })).rejects.toThrow(
      /Permissions Violation/,
    );
    await expect(monitor.request('$JS.API.STREAM.NAMES', '{}', { timeout: 1000 })).rejects.toThrow(
      /Permissions Violation/,
    );
  });

  it('keeps every daemon to its own bucket, against the KV client and the raw JetStream API', async () => {
    const vol = await as('vol-mgr');
    const own = await new Kvm(vol).create('sysbox-vol');
    await own.put('n1.v1', 'x');
    expect((await own.get('n1.v1'))?.string()).toBe('x');
    // Another node's keys in its own bucket: refused.
    await expect(own.put('n2.v1', 'x')).rejects.toThrow(/Permissions Violation/);

    const other = await new Kvm(vol).open('sysbox-subid');
    await expect(other.get('n1.c1')).rejects.toThrow(/Permissions Violation/);
    const raw = [
      ['$KV.sysbox-subid.n1.c1', '{"base":0}'],
      ['$JS.API.STREAM.DELETE.KV_sysbox-subid', ''],
      ['$JS.API.STREAM.PURGE.KV_sysbox-subid', ''],
      ['$JS.API.STREAM.INFO.KV_sysbox-subid', ''],
      ['$JS.API.STREAM.MSG.GET.KV_sysbox-subid', '{"last_by_subj":"$KV.sysbox-subid.n1.c1"}'],
      ['$JS.API.DIRECT.GET.KV_sysbox-subid.$KV.sysbox-subid.n1.c1', ''],
      ['$JS.API.STREAM.CREATE.KV_sysbox-filler', '{"name":"KV_sysbox-filler","subjects":["x.>"]}'],
      ['$JS.API.CONSUMER.CREATE.KV_sysbox-subid', '{}'],
      // Not even its own bucket may be deleted or purged.
      ['$JS.API.STREAM.DELETE.KV_sysbox-vol', ''],
      ['$JS.API.STREAM.PURGE.KV_sysbox-vol', ''],
    ] as const;
    for (const [subject, body] of raw) {
      await expect(vol.request(subject, body, { timeout: 1000 }), subject).rejects.toThrow(
        /Permissions Violation/,
      );
    }
    // The subid record is as the operator wrote it.
    const op = await as('operator');
    expect((await (await new Kvm(op).open('sysbox-subid')).get('n1.c1'))?.string()).toBe('{"base":100000}');
  });

  it("keeps each identity to its own inbox: no one reads another identity's replies", async () => {
    const gateway = await as('gateway');
    for (const subject of ['_INBOX.>', '_INBOX_vol-mgr.>', '>']) {
      expect(await gateway.subscribe(subject).closed, subject).toBeInstanceOf(Error);
    }
  });
});
