/**
 * The system on a NATS JetStream cluster, as an operator who outgrew one host runs it: three
 * nats-server members on loopback, two simulated hosts (own node name, data root, socket, subuid
 * files), each running the four services and a gateway with every member's URL and R3 buckets.
 * Container lifecycles run on both hosts while one member is SIGKILLed and later restarted, then
 * a second. Every lifecycle must succeed, nothing may be left behind, and the latency of a
 * lifecycle before, during and after the failovers is printed.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { startNatsCluster, type NatsCluster } from '@sysbox-mgr-ts/test-nats';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { sleep, startSystem, type System } from './harness.js';
import { newChownContainer, runStep, type LifecycleOptions } from './lifecycle.js';
import { buildImage, mountsBelow, servicesState } from './runtime.js';

type Phase = 'before' | 'during' | 'after';

interface Host {
  sys: System;
  client: SysboxMgrClient;
  o: LifecycleOptions;
}

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

describe('two hosts on a three-member JetStream cluster, members killed mid-run', () => {
  let cluster: NatsCluster;
  const hosts: Host[] = [];

  beforeAll(async () => {
    const nodes = ['host-a', 'host-b'];
    cluster = await startNatsCluster({ size: 3, auth: { nodes } });
    for (const node of nodes) {
      const sys = await startSystem({
        nats: cluster,
        node,
        logLevel: 'info',
        commonArgs: ['--kv-replicas', '3'],
        args: { gateway: ['--disable-ovfs-on-idmapped-mount'] },
      });
      const client = connectGateway(sys.socket);
      const overlay2 = join(sys.dir, 'docker', 'overlay2');
      hosts.push({ sys, client, o: { client: () => client, overlay2, image: await buildImage(overlay2, 'img') } });
    }
  }, 120_000);
  afterAll(async () => {
    for (const h of hosts) {
      h.client.close();
      await h.sys.stop();
    }
    await cluster?.stop();
  });

  it('runs every lifecycle to the end across two member kills and leaves nothing behind', async () => {
    onTestFailed(() => {
      for (const h of hosts) process.stderr.write(h.sys.logs());
      for (const s of cluster.servers) process.stderr.write(s.logs().slice(-4000));
    });
    let phase: Phase = 'before';
    const durations: Record<Phase, number[]> = { before: [], during: [], after: [] };
    const failures: string[] = [];
    let running = true;
    let seq = 0;

    const stream = async (h: Host, name: string): Promise<void> => {
      while (running) {
        const id = `${name}-${++seq}`;
        const started = Date.now();
        const startPhase = phase;
        try {
          const c = await newChownContainer(h.o, id);
          for (const step of ['create', 'stop', 'remove'] as const) await runStep(h.o, c, step);
          // A lifecycle that overlapped a failover counts as during it.
          durations[startPhase === 'before' && phase !== 'before' ? 'during' : startPhase].push(Date.now() - started);
        } catch (err) {
          failures.push(`${h.sys.node} ${id} (${startPhase}): ${(err as Error).message}`);
        }
      }
    };
    const streams = hosts.flatMap((h, i) => [stream(h, `a${i}`), stream(h, `b${i}`)]);

    await sleep(6000);
    phase = 'during';
    await cluster.servers[0]!.crash();
    await sleep(5000);
    await cluster.servers[0]!.start();
    await sleep(3000);
    await cluster.servers[1]!.crash();
    await sleep(5000);
    await cluster.servers[1]!.start();
    await sleep(3000);
    phase = 'after';
    await sleep(6000);
    running = false;
    await Promise.all(streams);

    const report = (Object.keys(durations) as Phase[])
      .map((p) => `${p}: n=${durations[p].length} p50=${percentile(durations[p], 50)} ms p99=${percentile(durations[p], 99)} ms`)
      .join('; ');
    process.stdout.write(`cluster lifecycles: ${report}; failed ${failures.length}\n`);
    expect(failures).toEqual([]);
    expect(durations.before.length).toBeGreaterThan(0);
    expect(durations.during.length).toBeGreaterThan(0);
    expect(durations.after.length).toBeGreaterThan(0);

    for (const h of hosts) {
      const state = await servicesState(h.sys);
      expect(state.subid.allocations, h.sys.node).toEqual([]);
      expect(state.vol.volumes, h.sys.node).toEqual([]);
      expect(state.rootfs.clones, h.sys.node).toEqual([]);
      expect(await mountsBelow(h.sys.dir), h.sys.node).toEqual([]);
    }
  }, 180_000);
});
