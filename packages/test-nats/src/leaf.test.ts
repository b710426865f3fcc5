/**
 * Leaf hosts on a hub (issue #28), on real nats-servers as `sysbox-nats-auth init --role hub|leaf`
 * configures them: each host keeps its buckets in its own JetStream domain, the hub reaches only
 * discovery and each host's list subjects, and no host reaches another through the hub. Every
 * refusal here comes from the servers.
 */
import { connect } from '@nats-io/transport-node';
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import { Kvm } from '@nats-io/kv';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientAuthOptions, leafSecretFile } from '@sysbox-mgr-ts/nats-auth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePorts, startNatsServer, type NatsServer } from './index.js';

const NODES = ['host-a', 'host-b'] as const;

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every answer to one request within `ms` (a `$SRV.PING` is answered by every instance). */
async function replies(nc: NatsConnection, subject: string, ms: number): Promise<string[]> {
  const got: string[] = [];
  try {
    for await (const m of await nc.requestMany(subject, '{}', { maxWait: ms })) got.push(m.string());
  } catch {
    // No responders: no answer.
  }
  return got;
}

describe('leaf hosts on a hub', () => {
  let hub: NatsServer;
  const leaves = new Map<string, NatsServer>();
  const open: NatsConnection[] = [];
  const as = async (ns: NatsServer, ...args: Parameters<NatsServer['connect']>): Promise<NatsConnection> => {
    const nc = await ns.connect(...args);
    open.push(nc);
    return nc;
  };

  beforeAll(async () => {
    hub = await startNatsServer({ auth: { nodes: [...NODES] }, hub: {} });
    for (const node of NODES) {
      const leaf = await startNatsServer({
        auth: { dir: hub.credentialsDir, nodes: [node] },
        leaf: { hubUrls: [hub.leafUrl!] },
      });
      leaves.set(node, leaf);
      // A stand-in for the host's vol-mgr: it answers its node's subjects and discovery.
      const vol = await as(leaf, 'vol-mgr');
      const answer = (m: Msg): void => void m.respond(JSON.stringify({ node, subject: m.subject }));
      vol.subscribe(`sysbox.${node}.vol.>`, { callback: (_, m) => answer(m) });
      vol.subscribe('$SRV.PING', { callback: (_, m) => answer(m) });
      await vol.flush();
    }
    // Both hosts' interest reached the hub.
    const monitor = await as(hub, 'monitor');
    await until(async () => (await replies(monitor, '$SRV.PING', 200)).length === NODES.length);
  }, 60_000);
  afterAll(async () => {
    for (const nc of open) await nc.close().catch(() => undefined);
    for (const leaf of leaves.values()) await leaf.stop();
    await hub?.stop();
  });

  it("keeps each host's buckets in its own JetStream domain, out of the hub's reach", async () => {
    const a = leaves.get('host-a')!;
    const local = await as(a, 'operator');
    const info = (await local.request('$JS.API.INFO', '', { timeout: 2000 })).json<{ domain?: string }>();
    expect(info.domain).toBe('host-a');
    const kv = await new Kvm(await as(a, 'vol-mgr')).create('sysbox-vol');
    await kv.put('host-a.v1', 'local');

    const op = await as(hub, 'operator');
    // The hub's JetStream has no such stream, and neither the host's API nor its keys are reachable.
    const hubInfo = (await op.request('$JS.API.STREAM.INFO.KV_sysbox-vol', '', { timeout: 2000 })).json<{
      error?: { err_code: number };
    }>();
    expect(hubInfo.error?.err_code).toBe(10059);
    await expect(
      op.request('$JS.host-a.API.STREAM.INFO.KV_sysbox-vol', '', { timeout: 1000 }),
    ).rejects.toThrow(/503|no responders|TIMEOUT/i);
    await expect(op.request('$KV.sysbox-vol.host-a.v1', 'from the hub', { timeout: 1000 })).rejects.toThrow(
      /503|no responders|TIMEOUT/i,
    );
    expect((await kv.get('host-a.v1'))?.string()).toBe('local');
  });

  it("lets the hub's monitor discover both hosts and read their lists", async () => {
    const monitor = await as(hub, 'monitor');
    const pings = (await replies(monitor, '$SRV.PING', 500)).map((r) => JSON.parse(r).node as string);
    expect(pings.sort()).toEqual([...NODES]);
    for (const node of NODES) {
      const reply = await monitor.request(`sysbox.${node}.vol.list`, '{}', { timeout: 2000 });
      expect(reply.json()).toEqual({ node, subject: `sysbox.${node}.vol.list` });
    }
  });

  it('refuses every mutating subject of a host from the hub, whoever asks', async () => {
    const monitor = await as(hub, 'monitor');
    await expect(monitor.request('sysbox.host-a.vol.prep', '{}', { timeout: 1000 })).rejects.toThrow(
      /Permissions Violation/,
    );
    // The operator may publish anything on the hub, but the host imports only its fleet subjects.
    const op = await as(hub, 'operator');
    await expect(op.request('sysbox.host-a.vol.prep', '{}', { timeout: 1000 })).rejects.toThrow(
      /503|no responders/i,
    );
    // The daemons' identities have nothing to do on a hub: it does not admit them.
    const volMgr = clientAuthOptions({ identity: 'vol-mgr', credentialsFile: hub.credentials('vol-mgr') });
    await expect(connect({ servers: hub.url, reconnect: false, ...volMgr })).rejects.toThrow(
      /Authorization Violation/,
    );
  });

  it('keeps each host to itself: nothing of one host is reachable from another through the hub', async () => {
    // The operator of host-a may do anything on host-a's server, and still reaches nothing of host-b.
    const opA = await as(leaves.get('host-a')!, 'operator');
    for (const subject of ['sysbox.host-a.vol.prep', 'sysbox.host-b.vol.prep', 'sysbox.host-b.vol.list']) {
      const nodes = (await replies(opA, subject, 300)).map((r) => JSON.parse(r).node as string);
      expect(nodes, subject).toEqual(subject.includes('host-a') ? ['host-a'] : []);
    }
    expect((await replies(opA, '$SRV.PING', 300)).map((r) => JSON.parse(r).node)).toEqual(['host-a']);
    // host-a's leaf password used on the hub as a client: it may only reply to the monitor.
    const secret = readFileSync(leafSecretFile(hub.credentialsDir!, 'host-a'), 'utf8').trim();
    const impostor = await connect({ servers: hub.url, user: 'leaf-host-a', pass: secret });
    open.push(impostor);
    await expect(impostor.request('sysbox.host-b.vol.prep', '{}', { timeout: 1000 })).rejects.toThrow(
      /Permissions Violation/,
    );
    // Nor answer in host-b's place.
    expect(await impostor.subscribe('sysbox.host-b.vol.list').closed).toBeInstanceOf(Error);
  });
});

describe('a leaf host behind a hub that lets everything through', () => {
  // The host does not rely on the hub's configuration: its leaf connection is bound to an account
  // that imports the fleet subjects only, so even an open hub reaches nothing else.
  let hub: NatsServer;
  let leaf: NatsServer;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'open-hub-'));
    const [leafPort] = await freePorts(1);
    const conf = join(dir, 'open-hub.conf');
    writeFileSync(conf, JSON.stringify({ leafnodes: { host: '127.0.0.1', port: leafPort } }));
    hub = await startNatsServer({ jetstream: false, auth: false, args: ['-c', conf] });
    // The host's credentials as the real hub's init makes them (its leaf password included).
    const creds = join(dir, 'creds');
    await startNatsServer({ jetstream: false, auth: { dir: creds, nodes: ['host-a'] }, hub: {} }).then((s) =>
      s.stop(),
    );
    leaf = await startNatsServer({
      auth: { dir: creds, nodes: ['host-a'] },
      leaf: { hubUrls: [`127.0.0.1:${leafPort}`] },
    });
    const vol = await leaf.connect('vol-mgr');
    vol.subscribe('sysbox.host-a.vol.>', { callback: (_, m) => void m.respond(m.subject) });
    await vol.flush();
  }, 60_000);
  afterAll(async () => {
    await leaf?.stop();
    await hub?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers its lists and nothing else', async () => {
    const anyone = await connect({ servers: hub.url });
    try {
      await until(async () =>
        anyone.request('sysbox.host-a.vol.list', '{}', { timeout: 500 }).then(
          (m) => m.string() === 'sysbox.host-a.vol.list',
          () => false,
        ),
      );
      // Not answered: no responder, or (the domain's API, mapped inside FLEET, which has no JetStream) none in time.
      for (const subject of ['sysbox.host-a.vol.prep', '$JS.API.INFO', '$JS.host-a.API.INFO']) {
        await expect(anyone.request(subject, '{}', { timeout: 1000 }), subject).rejects.toThrow(
          /503|no responders|timeout/i,
        );
      }
    } finally {
      await anyone.close();
    }
  });
});
