import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNatsCluster, startNatsServer, type NatsCluster } from './index.js';

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('startNatsCluster', () => {
  let cluster: NatsCluster;
  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 3 });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it('runs three authenticated members that hold an R3 bucket together', async () => {
    expect(cluster.servers).toHaveLength(3);
    await expect(connect({ servers: cluster.servers[1]!.url, reconnect: false })).rejects.toThrow(
      /Authorization Violation/,
    );
    const nc = await cluster.connect();
    const kv = await new Kvm(nc).create('r3', { replicas: 3 });
    await kv.put('k', 'v');
    const info = (await kv.status()).streamInfo;
    expect(info.cluster?.replicas?.length).toBe(2);
    expect(info.config.num_replicas).toBe(3);
    await nc.close();
  });

  it('only members holding the route secret join: the routes are authenticated', async () => {
    // A server with its own (other) secret pointed at the members' route ports.
    const routes = cluster.servers.map(
      (s) => s.logs().match(/Listening for route connections on ([\d.]+:\d+)/)![1]!,
    );
    const intruder = await startNatsServer({
      jetstream: false,
      cluster: { name: 'sysbox', port: -1, routes, serverName: 'intruder' },
    });
    try {
      await until(() =>
        cluster.servers.some((s) => /Router connection closed: Authentication Failure/.test(s.logs())),
      );
      expect(intruder.logs()).toMatch(/Route Error 'Authorization Violation'/);
    } finally {
      await intruder.stop();
    }
  });
});
