/**
 * The system on a NATS JetStream cluster, as an operator who outgrew one host runs it: three
 * nats-server members on loopback, two simulated hosts (own node name, data root, socket, subuid
 * files), each running the four services and a gateway with every member's URL and R3 buckets.
 * Container lifecycles run on both hosts while one member is SIGKILLed and later restarted, then
 * a second. Shared by the suite's test and the bench.
 */
import { join } from 'node:path';
import { percentile } from '@sysbox-mgr-ts/bench-kit';
import { startNatsCluster, type NatsCluster } from '@sysbox-mgr-ts/test-nats';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { sleep, startSystem, type System } from './harness.js';
import { cleanUpLikeARuntime, newChownContainer, runStep, type LifecycleOptions } from './lifecycle.js';
import { buildImage, mountsBelow, servicesState } from './runtime.js';

export type Phase = 'before' | 'during' | 'after';

export interface ClusterRun {
  durations: Record<Phase, number[]>;
  failures: string[];
  /** What is left on each host after the run: records and mounts. */
  left: string[];
  /** `<phase>: n=.. p50=.. p99=..` */
  report: string;
}

interface Host {
  sys: System;
  client: SysboxMgrClient;
  o: LifecycleOptions;
}

export interface ClusterScenario {
  cluster: NatsCluster;
  hosts: Host[];
  run(opts?: { beforeMs?: number; downMs?: number; settleMs?: number; afterMs?: number }): Promise<ClusterRun>;
  logs(): string;
  stop(): Promise<void>;
}

export async function startClusterScenario(opts: { logLevel?: string } = {}): Promise<ClusterScenario> {
  const nodes = ['host-a', 'host-b'];
  const cluster = await startNatsCluster({ size: 3, auth: { nodes } });
  const hosts: Host[] = [];
  for (const node of nodes) {
    const sys = await startSystem({
      nats: cluster,
      node,
      logLevel: opts.logLevel ?? 'info',
      commonArgs: ['--kv-replicas', '3'],
      args: { gateway: ['--disable-ovfs-on-idmapped-mount'] },
    });
    const client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    hosts.push({ sys, client, o: { client: () => client, overlay2, image: await buildImage(overlay2, 'img') } });
  }

  return {
    cluster,
    hosts,
    logs: () => [...hosts.map((h) => h.sys.logs()), ...cluster.servers.map((s) => s.logs().slice(-4000))].join('\n'),
    async run({ beforeMs = 6000, downMs = 5000, settleMs = 3000, afterMs = 6000 } = {}) {
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
          const c = await newChownContainer(h.o, id);
          try {
            for (const step of ['create', 'stop', 'remove'] as const) await runStep(h.o, c, step);
            // A lifecycle that overlapped a failover counts as during it.
            durations[startPhase === 'before' && phase !== 'before' ? 'during' : startPhase].push(Date.now() - started);
          } catch (err) {
            failures.push(`${h.sys.node} ${id} (${startPhase}): ${(err as Error).message}`);
            await cleanUpLikeARuntime(h.o.client, c);
          }
        }
      };
      const streams = hosts.flatMap((h, i) => [stream(h, `a${i}`), stream(h, `b${i}`)]);
      await sleep(beforeMs);
      phase = 'during';
      for (const member of [cluster.servers[0]!, cluster.servers[1]!]) {
        await member.crash();
        await sleep(downMs);
        await member.start();
        await sleep(settleMs);
      }
      phase = 'after';
      await sleep(afterMs);
      running = false;
      await Promise.all(streams);

      const left: string[] = [];
      for (const h of hosts) {
        const state = await servicesState(h.sys);
        for (const a of state.subid.allocations) left.push(`${h.sys.node} subid ${a.id}`);
        for (const v of state.vol.volumes) left.push(`${h.sys.node} volume ${v.kind}/${v.id}`);
        for (const c of state.rootfs.clones) left.push(`${h.sys.node} clone ${c.id}`);
        for (const m of await mountsBelow(h.sys.dir)) left.push(`${h.sys.node} mount ${m}`);
      }
      const report = (Object.keys(durations) as Phase[])
        .map((p) => `${p}: n=${durations[p].length} p50=${percentile(durations[p], 50)} ms p99=${percentile(durations[p], 99)} ms`)
        .join('; ');
      return { durations, failures, left, report };
    },
    async stop() {
      for (const h of hosts) {
        h.client.close();
        await h.sys.stop();
      }
      await cluster.stop();
    },
  };
}
