/**
 * Whole-system bench: full container lifecycles (Register .. removal, chown mode, a rootfs clone,
 * docker and kubelet volumes, a 10,000-entry image) through the gateway socket with every daemon as its own
 * process, sequentially and 8 at a time. The same-run baseline is the same filesystem work done
 * directly (mount the clone overlay, rsync both volumes in with chown, chown -R the clone, revert,
 * rsync out, unmount, delete), so the ratio is what the system adds: gRPC, NATS, KV, processes.
 * Also each daemon's resident memory idle and at its peak under that load, and where the time goes
 * (breakdown.ts): every gRPC call as the client sees it and every daemon's own per-request time,
 * for the sequential runs and for the concurrent ones. Runs on a RAM-backed ext4 (bench-support.ts);
 * BENCH_SCRATCH=disk on the host's temp dir, BENCH_CONC_RUNS=0 one at a time only.
 */
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { compareRuns, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec';
import { timedClient, type Span } from './breakdown.js';
import {
  benchScratch,
  cpuMeter,
  cpuSamples,
  lifecycleFigures,
  measuredWindow,
  type LifecycleComparison,
} from './bench-support.js';
import { status } from '@grpc/grpc-js';
import { connectGateway, rpc, statusOf } from './grpc.js';
import { startSystem, type System } from './harness.js';
import {
  VOLUME_REQUESTS,
  newChownContainer,
  runStep,
  type ChownContainer,
  type LifecycleOptions,
} from './lifecycle.js';
import {
  buildImage,
  mountContainerRootfs,
  removeLikeDocker,
  unmountAll,
  until,
  type ImageLayers,
} from './runtime.js';

const quick = process.env.BENCH_QUICK === '1';
const ENTRIES = quick ? 1000 : 10_000;
/**
 * Pairs of runs (system, direct, alternated), after one warm-up pair. The ratio is the median of
 * the per-pair ratios and the spread their interquartile range: two runs of a pair share the
 * machine's load of that minute, so a neighbour's burst moves one pair, not the median.
 */
const SEQ_RUNS = Number(process.env.BENCH_SEQ_RUNS ?? (quick ? 2 : 9));
const CONC_RUNS = Number(process.env.BENCH_CONC_RUNS ?? (quick ? 1 : 3));
const CONCURRENCY = 8;
const OFFSET = 165536;
const out = (l: string) => void process.stdout.write(`${l}\n`);

/** A daemon's resident MB; NaN once it is gone (the bench's own error then says why). */
function rssMb(pid: number): number {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return NaN;
  }
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * The same host work as one lifecycle, done directly with the tools: the clone overlay, both
 * volumes the lifecycle asks for (VOLUME_REQUESTS: docker and kubelet) synced in with the uid
 * shift and out again, the chown and its revert, unmount and delete.
 */
async function directLifecycle(
  overlay2: string,
  image: ImageLayers,
  id: string,
  record: (s: Span) => void,
): Promise<void> {
  const timed = async (step: string, fn: () => Promise<unknown>): Promise<void> => {
    const start = Date.now();
    await fn();
    record({ step: `direct ${step}`, start, end: Date.now() });
  };
  const r = await mountContainerRootfs(overlay2, id, image);
  const clone = join(overlay2, '..', 'direct-clones', id);
  const [merged, diff, work] = ['merged', 'diff', 'work'].map((d) => join(clone, d)) as [
    string,
    string,
    string,
  ];
  const volumes = VOLUME_REQUESTS.map((v) => ({ dest: v.dest, host: join(clone, 'volumes', v.dest) }));
  for (const d of [merged, diff, work, ...volumes.map((v) => v.host)]) await mkdir(d, { recursive: true });
  const rsync = (from: string, to: string, owner: number) =>
    run('rsync', ['-rauqlH', '--no-devices', '--delete', `--chown=${owner}:${owner}`, `${from}/`, `${to}/`], {
      timeout: 120_000,
    });
  await timed('mount clone', () =>
    run(
      'mount',
      [
        '-t',
        'overlay',
        'overlay',
        '-o',
        `lowerdir=${image.lowers.join(':')},upperdir=${diff},workdir=${work},metacopy=on,index=on,redirect_dir=on`,
        merged,
      ],
      { timeout: 30_000 },
    ),
  );
  // One volume after another, as the gateway (and upstream) sync them.
  await timed('rsync in', async () => {
    for (const v of volumes) await rsync(join(r.merged, v.dest), v.host, OFFSET);
  });
  await timed('chown -R', () =>
    run('chown', ['-R', '-h', `${OFFSET}:${OFFSET}`, merged], { timeout: 120_000 }),
  );
  await timed('chown -R back', () => run('chown', ['-R', '-h', '0:0', merged], { timeout: 120_000 }));
  await timed('rsync out', async () => {
    for (const v of volumes) {
      const target = join(diff, v.dest);
      await mkdir(target, { recursive: true });
      await rsync(v.host, target, 0);
    }
  });
  await timed('unmount and delete', async () => {
    await run('umount', [merged], { timeout: 30_000 });
    await unmountAll(r.merged);
    await rm(clone, { recursive: true, force: true });
    // The runtime's own delete, as the system run's runtime does it (removeLikeDocker).
    await run('rm', ['-rf', r.dir], { timeout: 30_000 });
  });
}

async function main(): Promise<void> {
  const scratch = await benchScratch();
  const sys: System = await startSystem({
    args: { gateway: ['--disable-ovfs-on-idmapped-mount'] },
    logLevel: process.env.BENCH_LOG_LEVEL ?? 'info',
    under: scratch.dir,
  }).catch(async (err: unknown) => {
    await scratch.close();
    throw err;
  });
  const figures: Figure[] = [];
  const client = connectGateway(sys.socket);
  try {
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    const image = await buildImage(overlay2, 'img', ENTRIES);
    const spans: Span[] = [];
    const timed = timedClient(client, (s) => spans.push(s));
    const o: LifecycleOptions = { client: () => timed, overlay2, image, workload: true };
    const daemons = sys.procs.map((p) => ({ app: p.app, pid: p.proc.pid! }));
    const meter = cpuMeter(sys);
    const cpu = { system: [] as number[], direct: [] as number[] };
    const withCpu =
      (k: number, side: 'system' | 'direct', fn: () => Promise<unknown>) => async (): Promise<void> => {
        const used = meter();
        await fn();
        cpu[side].push(used() / k);
      };
    await new Promise((r) => setTimeout(r, 2000));
    const idle = new Map(daemons.map((d) => [d.app, rssMb(d.pid)]));
    const peak = new Map(daemons.map((d) => [d.app, idle.get(d.app)!]));
    const sampler = setInterval(() => {
      for (const d of daemons) peak.set(d.app, Math.max(peak.get(d.app)!, rssMb(d.pid)));
    }, 100);

    let n = 0;
    /**
     * The runtime removes the container, then the bench waits for the gateway to release it. The
     * lifecycle tests wait by polling Pause, which on a stopped container syncs its volumes out
     * again (two rsyncs a poll, measured: 3 to 4 polls a container at 8 at a time): work sysbox-runc
     * never asks for and the direct baseline does not do. ReqFsState answers NOT_FOUND as soon as the
     * record is gone and does nothing else. BENCH_PAUSE_POLLS=1 waits the tests' way.
     */
    const pausePolls = process.env.BENCH_PAUSE_POLLS === '1';
    const removeWatchingTable = (c: ChownContainer): Promise<void> =>
      removeLikeDocker(c.rootfs, async () => {
        await until(
          `release of ${c.id}`,
          async () =>
            (await statusOf(rpc(timed, 'ReqFsState', { id: c.id, rootfs: c.cloneRootfs! })))?.code ===
            status.NOT_FOUND,
        );
      });
    const viaSystem = async (): Promise<void> => {
      const c = await newChownContainer(o, `bench-${n++}`);
      for (const step of ['create', 'stop', 'remove'] as const) {
        const start = Date.now();
        if (step === 'remove' && !pausePolls) await removeWatchingTable(c);
        else await runStep(o, c, step);
        spans.push({ step: `lifecycle ${step}`, start, end: Date.now() });
      }
    };
    const direct = async (): Promise<void> => {
      const start = Date.now();
      await directLifecycle(overlay2, image, `direct-${n++}`, (x) => spans.push(x));
      spans.push({ step: 'direct lifecycle', start, end: Date.now() });
    };

    const breakdown: string[] = [];
    // Warm-up pairs are in the spans too: the breakdown divides by the lifecycles it saw.
    const compare = async (k: number, runs: number, title: string): Promise<LifecycleComparison> => {
      cpu.system = [];
      cpu.direct = [];
      const r = await measuredWindow(
        sys,
        spans,
        breakdown,
        `${title} (${runs + 1} x ${k}, warm-up included)`,
        (runs + 1) * k,
        () =>
          compareRuns({
            runs,
            warmup: 1,
            candidate: withCpu(k, 'system', () => Promise.all(Array.from({ length: k }, viaSystem))),
            baseline: withCpu(k, 'direct', () => Promise.all(Array.from({ length: k }, direct))),
          }),
      );
      return { ...r, ...cpuSamples(cpu, 1) };
    };
    const seq = await compare(1, SEQ_RUNS, 'one lifecycle at a time');
    const conc =
      CONC_RUNS > 0 ? await compare(CONCURRENCY, CONC_RUNS, `${CONCURRENCY} at a time`) : undefined;
    clearInterval(sampler);

    const on = `${ENTRIES} entries, clone + docker and kubelet volumes, ${scratch.label}`;
    figures.push(...lifecycleFigures(`chown lifecycle, sequential (${on})`, seq, 1, '>= 0.9x'));
    if (conc)
      figures.push(
        ...lifecycleFigures(`chown lifecycle, ${CONCURRENCY} at a time`, conc, CONCURRENCY, '>= 0.9x'),
      );
    for (const d of daemons) {
      figures.push({
        name: `${d.app} RSS idle`,
        value: idle.get(d.app)!,
        unit: 'MB',
        better: 'lower',
        goal: '< 64 MB',
      });
      figures.push({
        name: `${d.app} RSS peak under lifecycle load`,
        value: peak.get(d.app)!,
        unit: 'MB',
        better: 'lower',
      });
    }
    out(
      `one lifecycle through the system: ${seq.candidate.median.toFixed(0)} ms (${seq.candidate.min.toFixed(0)}-${seq.candidate.max.toFixed(0)}); direct: ${seq.baseline.median.toFixed(0)} ms (${seq.baseline.min.toFixed(0)}-${seq.baseline.max.toFixed(0)}); per-pair ratios ${seq.pairs.min.toFixed(2)}-${seq.pairs.max.toFixed(2)}`,
    );
    out('');
    out(
      '## Where the time goes (client: grpc calls and lifecycle steps; daemons: per-request ms from their logs)',
    );
    out('');
    for (const l of breakdown) out(l);
  } finally {
    client.close();
    await sys.stop();
    await scratch.close();
  }
  // The host-disk run (BENCH_SCRATCH=disk) reports beside the RAM-backed one, not over it.
  await writeFigures(scratch.kind === 'ram' ? 'e2e-system' : 'e2e-system-disk', figures, out);
}

await main();
