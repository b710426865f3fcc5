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
import { connectGateway, observeCalls, type CallRecord, type SysboxMgrClient } from './grpc.js';
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
  /** Calls that took SLOW_CALL_MS or more, with the member kills and restarts, on one timeline. */
  slowCalls: string;
  /** Per member kill, how long each stream (and the metadata) waited for a new leader, from the members' logs. */
  elections: Election[][];
  /** The same, one line per kill. */
  electionReport: string;
}

/** nats-server's `[pid] 2026/11/30 11:40:37.867540 [INF] ...` time stamp, in local time. */
function logTime(stamp: string): number {
  const [date, time] = stamp.split(' ') as [string, string];
  const [y, mo, d] = date.split('/').map(Number) as [number, number, number];
  const [h, mi, sec] = time.split(':') as [string, string, string];
  return new Date(y, mo - 1, d, Number(h), Number(mi), 0, 0).getTime() + Math.round(Number(sec) * 1000);
}

/** Each new leader once: the stream's new leader, or the member that became metadata leader, logs it. */
const LEADER_LINE =
  /^\[\d+\] (\S+ \S+) \[INF\] (?:JetStream cluster new stream leader for '[^>]+> ([^']+)'|Self is new JetStream cluster metadata leader)/gm;

export interface Election {
  /** A stream (KV_<bucket>) or 'metadata'. */
  what: string;
  afterMs: number;
}

/** Per kill, the leaders elected after it and before the next kill, from the members' logs. */
function electionsAfter(kills: number[], memberLogs: string[]): Election[][] {
  const elected = memberLogs.flatMap((log) =>
    [...log.matchAll(LEADER_LINE)].map((m) => ({ at: logTime(m[1]!), what: m[2] ?? 'metadata' })),
  );
  return kills.map((kill, i) => {
    const next = kills[i + 1] ?? Infinity;
    return elected
      .filter((e) => e.at > kill && e.at < next)
      .sort((a, b) => a.at - b.at)
      .map((e) => ({ what: e.what, afterMs: e.at - kill }));
  });
}

/** A call this slow met a failover: the healthy p99 of a whole lifecycle is under 2 s. */
const SLOW_CALL_MS = 1000;

interface Host {
  sys: System;
  client: SysboxMgrClient;
  o: LifecycleOptions;
}

export interface ClusterScenario {
  cluster: NatsCluster;
  hosts: Host[];
  run(opts?: {
    beforeMs?: number;
    downMs?: number;
    settleMs?: number;
    afterMs?: number;
  }): Promise<ClusterRun>;
  /** Daemon logs and the tail of each member's log (all of it when `whole`). */
  logs(whole?: boolean): string;
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
    hosts.push({
      sys,
      client,
      o: {
        client: () => client,
        overlay2,
        image: await buildImage(overlay2, 'img'),
        releaseWithinMs: 30_000,
      },
    });
  }

  return {
    cluster,
    hosts,
    logs: (whole = false) =>
      [
        ...hosts.map((h) => h.sys.logs()),
        ...cluster.servers.map((s) => (whole ? s.logs() : s.logs().slice(-4000))),
      ].join('\n'),
    async run({ beforeMs = 6000, downMs = 5000, settleMs = 10_000, afterMs = 6000 } = {}) {
      let phase: Phase = 'before';
      const durations: Record<Phase, number[]> = { before: [], during: [], after: [] };
      const failures: string[] = [];
      let running = true;
      let seq = 0;
      const t0 = Date.now();
      const timeline: { at: number; line: string }[] = [];
      observeCalls((c: CallRecord) => {
        if (c.ms >= SLOW_CALL_MS)
          timeline.push({ at: c.startedAt, line: `${c.method} ${c.id} took ${c.ms} ms (status ${c.code})` });
      });
      const stream = async (h: Host, name: string): Promise<void> => {
        while (running) {
          const id = `${name}-${++seq}`;
          const started = Date.now();
          const startPhase = phase;
          const c = await newChownContainer(h.o, id);
          try {
            for (const step of ['create', 'stop', 'remove'] as const) await runStep(h.o, c, step);
            // A lifecycle that overlapped a failover counts as during it.
            durations[startPhase === 'before' && phase !== 'before' ? 'during' : startPhase].push(
              Date.now() - started,
            );
          } catch (err) {
            failures.push(`${h.sys.node} ${id} (${startPhase}): ${(err as Error).message}`);
            await cleanUpLikeARuntime(h.o.client, c);
          }
        }
      };
      const streams = hosts.flatMap((h, i) => [stream(h, `a${i}`), stream(h, `b${i}`)]);
      await sleep(beforeMs);
      phase = 'during';
      const kills: number[] = [];
      for (const [i, member] of [cluster.servers[0]!, cluster.servers[1]!].entries()) {
        kills.push(Date.now());
        timeline.push({ at: Date.now(), line: `member ${i} SIGKILLed` });
        await member.crash();
        await sleep(downMs);
        timeline.push({ at: Date.now(), line: `member ${i} restarting` });
        await member.start();
        timeline.push({ at: Date.now(), line: `member ${i} ready` });
        await sleep(settleMs);
      }
      phase = 'after';
      await sleep(afterMs);
      running = false;
      await Promise.all(streams);
      observeCalls(undefined);
      const slowCalls = timeline
        .sort((a, b) => a.at - b.at)
        .map((e) => `  t+${((e.at - t0) / 1000).toFixed(2)} s ${e.line}`)
        .join('\n');

      const left: string[] = [];
      for (const h of hosts) {
        const state = await servicesState(h.sys);
        for (const a of state.subid.allocations) left.push(`${h.sys.node} subid ${a.id}`);
        for (const v of state.vol.volumes) left.push(`${h.sys.node} volume ${v.kind}/${v.id}`);
        for (const c of state.rootfs.clones) left.push(`${h.sys.node} clone ${c.id}`);
        for (const m of await mountsBelow(h.sys.dir)) left.push(`${h.sys.node} mount ${m}`);
      }
      const report = (Object.keys(durations) as Phase[])
        .map(
          (p) =>
            `${p}: n=${durations[p].length} p50=${percentile(durations[p], 50)} ms p99=${percentile(durations[p], 99)} ms`,
        )
        .join('; ');
      const elections = electionsAfter(
        kills,
        cluster.servers.map((m) => m.logs()),
      );
      const electionReport = elections
        .map(
          (e, i) =>
            `kill ${i}: ${e.length > 0 ? e.map((x) => `${x.what} after ${(x.afterMs / 1000).toFixed(2)} s`).join(', ') : 'no leader lost'}`,
        )
        .join('\n');
      return { durations, failures, left, report, slowCalls, elections, electionReport };
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
