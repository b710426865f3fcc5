/**
 * Hosts that survive the hub (issue #28): a three-member hub cluster and two leaf hosts, each with
 * its own nats-server (a leaf node of the hub, its own JetStream domain holding its buckets) and
 * its own daemons on it, as `sysbox-nats-auth init --role hub|leaf` configures them. Container
 * lifecycles run on both hosts while the whole hub is SIGKILLed: they must go on, with none
 * failed, and once the hub is back its monitor must see both hosts again (discovery and lists
 * through the hub). Prints the lifecycle p50/p99 on a host with the hub up and down.
 *
 * SYSBOX_E2E_TOPOLOGY=central runs the same with the daemons on the hub (a central cluster, R3
 * buckets) instead: there the kill stops every lifecycle, and the test fails.
 */
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { percentile } from '@sysbox-mgr-ts/bench-kit';
import {
  startNatsCluster,
  startNatsServer,
  type NatsCluster,
  type NatsServer,
} from '@sysbox-mgr-ts/test-nats';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { cleanUpLikeARuntime, newChownContainer, runStep, type LifecycleOptions } from './lifecycle.js';
import { buildImage, mountsBelow, servicesState, until } from './runtime.js';

const NODES = ['host-a', 'host-b'];
const SERVICES = 4;
const topology = process.env.SYSBOX_E2E_TOPOLOGY === 'central' ? 'central' : 'leaf';
/** Lifecycles each host must finish in each phase (more for figures: SYSBOX_E2E_LEAF_SAMPLES=30). */
const SAMPLES = Number(process.env.SYSBOX_E2E_LEAF_SAMPLES ?? 2);
/** How long the hub may stay down while waiting for them: with the central topology none come. */
const OUTAGE_LIMIT_MS = 45_000;

interface Host {
  node: string;
  /** The host's own nats-server (leaf topology), or the hub (central). */
  bus: NatsServer | NatsCluster;
  sys: System;
  client: SysboxMgrClient;
  o: LifecycleOptions;
}

/** What the hub's monitor sees: every `$SRV.PING` answer within `ms`, as `<node> <service>`. */
async function fleetView(monitor: NatsConnection, ms = 500): Promise<string[]> {
  const seen: string[] = [];
  try {
    for await (const m of await monitor.requestMany('$SRV.PING', '', { maxWait: ms })) {
      const ping = m.json<{ name: string; metadata?: { node?: string } }>();
      seen.push(`${ping.metadata?.node} ${ping.name}`);
    }
  } catch {
    // No responders, or the hub is unreachable: nobody seen.
  }
  return seen.sort();
}

/** Both hosts seen from the hub: every service of each answers discovery, and each host's lists answer. */
async function seesBothHosts(monitor: NatsConnection): Promise<boolean> {
  const view = await fleetView(monitor);
  if (NODES.some((n) => view.filter((v) => v.startsWith(`${n} `)).length < SERVICES)) return false;
  for (const node of NODES) {
    const ok = await monitor.request(`sysbox.${node}.vol.list`, '{}', { timeout: 2000 }).then(
      (m) => Array.isArray(m.json<{ volumes?: unknown }>().volumes),
      () => false,
    );
    if (!ok) return false;
  }
  return true;
}

describe(`two hosts on a hub (${topology} topology), the whole hub SIGKILLed mid-run`, () => {
  let hub: NatsCluster;
  const hosts: Host[] = [];
  let monitor: NatsConnection;

  beforeAll(async () => {
    hub = await startNatsCluster({ size: 3, auth: { nodes: NODES }, hub: topology === 'leaf' });
    for (const node of NODES) {
      const bus =
        topology === 'leaf'
          ? await startNatsServer({
              auth: { dir: hub.credentialsDir, nodes: [node] },
              leaf: { hubUrls: hub.leafUrls },
            })
          : hub;
      const sys = await startSystem({
        nats: bus,
        node,
        logLevel: 'info',
        commonArgs: topology === 'central' ? ['--kv-replicas', '3'] : [],
        args: { gateway: ['--disable-ovfs-on-idmapped-mount'] },
      });
      const client = connectGateway(sys.socket);
      const overlay2 = join(sys.dir, 'docker', 'overlay2');
      const image = await buildImage(overlay2, 'img');
      hosts.push({
        node,
        bus,
        sys,
        client,
        o: { client: () => client, overlay2, image, releaseWithinMs: 30_000 },
      });
    }
    monitor = await hub.connect('monitor', { maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    await until('the hub sees both hosts', () => seesBothHosts(monitor), 30_000);
  }, 120_000);

  afterAll(async () => {
    await monitor?.close();
    for (const h of hosts) {
      h.client.close();
      await h.sys.stop();
      if (h.bus !== hub) await h.bus.stop();
    }
    await hub?.stop();
  });

  it('runs lifecycles on both hosts through the outage, none failed, and the hub sees both hosts again', async () => {
    onTestFailed(() => {
      process.stderr.write(hosts.map((h) => h.sys.logs()).join('\n'));
    });
    type Phase = 'up' | 'down' | 'overlap';
    const durations: Record<string, Record<Phase, number[]>> = Object.fromEntries(
      NODES.map((n) => [n, { up: [], down: [], overlap: [] }]),
    );
    const failures: string[] = [];
    /** The hub's state changes, as times: a lifecycle is 'down' if it ran wholly inside the outage. */
    let killedAt = Infinity;
    let restartAt = Infinity;
    let backAt = Infinity;
    let running = true;
    let seq = 0;
    const stream = async (h: Host, name: string): Promise<void> => {
      while (running) {
        const id = `${name}-${++seq}`;
        const c = await newChownContainer(h.o, id);
        const started = Date.now();
        try {
          for (const step of ['create', 'stop', 'remove'] as const) await runStep(h.o, c, step);
          const ended = Date.now();
          const phase: Phase =
            started > killedAt && ended < restartAt
              ? 'down'
              : ended < killedAt || started > backAt
                ? 'up'
                : 'overlap';
          durations[h.node]![phase].push(ended - started);
        } catch (err) {
          failures.push(`${h.node} ${id}: ${(err as Error).message}`);
          await cleanUpLikeARuntime(h.o.client, c);
        }
      }
    };
    const streams = hosts.flatMap((h) => [stream(h, `${h.node}-a`), stream(h, `${h.node}-b`)]);
    const each = (phase: Phase, n: number) => async () =>
      NODES.every((x) => durations[x]![phase].length >= n);
    await until('lifecycles on both hosts with the hub up', each('up', SAMPLES), 60_000);

    killedAt = Date.now();
    await Promise.all(hub.servers.map((s) => s.crash()));
    // The hub is gone: nothing answers its monitor's discovery.
    const viewWhileDown = await fleetView(monitor);
    // Down until each host ran lifecycles wholly inside the outage (none come on a central hub).
    const wentOn = await until(
      'lifecycles on both hosts with the hub down',
      each('down', SAMPLES),
      OUTAGE_LIMIT_MS,
    ).then(
      () => true,
      () => false,
    );
    restartAt = Date.now();
    await Promise.all(hub.servers.map((s) => s.start()));
    await until('the hub sees both hosts again', () => seesBothHosts(monitor), 30_000);
    backAt = Date.now();
    const upBefore = Object.fromEntries(NODES.map((n) => [n, durations[n]!.up.length]));
    await until(
      'lifecycles on both hosts after the hub came back',
      async () => NODES.every((n) => durations[n]!.up.length > upBefore[n]!),
      60_000,
    );
    running = false;
    await Promise.all(streams);

    const report = NODES.map((n) => {
      const d = durations[n]!;
      const fig = (xs: number[]) =>
        `n=${xs.length} p50=${percentile(xs, 50)} ms p99=${percentile(xs, 99)} ms`;
      return `${n}: hub up ${fig(d.up)}; hub down ${fig(d.down)}; across a kill or restart n=${d.overlap.length}`;
    }).join('\n');
    process.stdout.write(
      `${topology} topology lifecycles (hub down ${((restartAt - killedAt) / 1000).toFixed(1)} s, back in view ${((backAt - restartAt) / 1000).toFixed(1)} s after its restart):\n${report}\nfailed: ${failures.length}\n${failures.slice(0, 10).join('\n')}\n`,
    );

    expect(viewWhileDown).toEqual([]);
    expect(failures).toEqual([]);
    // Lifecycles went on while the hub was away: several ran start to end inside the outage.
    expect(wentOn).toBe(true);

    for (const h of hosts) {
      // Each host's state is in its own JetStream domain, on its own server.
      const nc = await h.bus.connect('operator');
      try {
        const info = (await nc.request('$JS.API.INFO', '', { timeout: 5000 })).json<{ domain?: string }>();
        expect(info.domain, h.node).toBe(h.node);
      } finally {
        await nc.close();
      }
      const state = await servicesState(h.sys);
      const left = [
        ...state.subid.allocations.map((a) => `subid ${a.id}`),
        ...state.vol.volumes.map((v) => `volume ${v.kind}/${v.id}`),
        ...state.rootfs.clones.map((c) => `clone ${c.id}`),
        ...(await mountsBelow(h.sys.dir)).map((m) => `mount ${m}`),
      ];
      expect(left, h.node).toEqual([]);
    }
  }, 240_000);
});
