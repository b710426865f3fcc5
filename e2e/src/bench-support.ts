/**
 * What the two lifecycle benches (bench.ts: chown mode, idmapped-bench.ts: ID-mapped) share:
 * where they run (scratch), how they meter CPU, how a measured window becomes a breakdown, and how
 * a comparison becomes the two figures per mode.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processCpuMs, summarize, type Figure, type Sample } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec';
import { daemonSpans, formatBreakdown, summarizeSpans, type Span } from './breakdown.js';
import type { System } from './harness.js';

export interface Scratch {
  /** Where the bench's system keeps its data root, runtime dirs and volumes. */
  dir: string;
  /** What the figures ran on, for their names and report file. */
  label: string;
  kind: 'ram' | 'disk';
  close(): Promise<void>;
}

/** Size of the RAM-backed ext4: sparse in tmpfs, so only what the bench writes takes memory. */
const RAM_DISK_BYTES = 6 * 2 ** 30;

/**
 * The filesystem the lifecycles run on. By default an ext4 filesystem on a loop device whose file
 * lives in tmpfs: the same kernel paths as a host's disk (ext4, overlayfs on it, rsync, chown)
 * without the disk's own variance. On this VM's virtio disk one `chown -R` of the same
 * 10,000-entry overlay took 0.8 to 2.9 s of system time depending on how long the disk had been
 * idle, alone on the machine; on the RAM-backed ext4, 0.21 to 0.34 s. A lifecycle ratio on the disk
 * moves with that (per-pair spread +-33%), so it cannot show what the system adds.
 * BENCH_SCRATCH=disk runs on the host's temp dir instead, as a host would.
 */
export async function benchScratch(): Promise<Scratch> {
  if (process.env.BENCH_SCRATCH === 'disk') {
    const dir = await mkdtemp(join(tmpdir(), 'sysbox-bench-'));
    return { dir, label: 'host disk', kind: 'disk', close: () => rm(dir, { recursive: true, force: true }) };
  }
  const root = await mkdtemp(join(tmpdir(), 'sysbox-bench-ram-'));
  const ram = join(root, 'tmpfs');
  const dir = join(root, 'ext4');
  await mkdir(ram);
  await mkdir(dir);
  const image = join(ram, 'ext4.img');
  const t = { timeout: 60_000 };
  await run('mount', ['-t', 'tmpfs', '-o', `size=${RAM_DISK_BYTES + 2 ** 28}`, 'bench-scratch', ram], t);
  try {
    await run('truncate', ['-s', String(RAM_DISK_BYTES), image], t);
    // One inode per 4 KiB: eight 10,000-entry containers with their clones and volumes at once.
    await run('mkfs.ext4', ['-q', '-F', '-i', '4096', image], t);
    await run('mount', ['-o', 'loop', image, dir], t);
  } catch (err) {
    await run('umount', [ram], t).catch(() => undefined);
    throw err;
  }
  return {
    dir,
    label: 'RAM-backed ext4',
    kind: 'ram',
    async close() {
      await run('umount', [dir], t);
      await run('umount', [ram], t);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * CPU ms of every process a lifecycle involves: the daemons (their rsync, mount and walker
 * children included once reaped), nats-server, and this process with its children (the runtime's
 * mounts, the direct run's rsync and chown). Unlike wall time it does not grow with the neighbours.
 * `meter()` starts a count; the function it answers reads it.
 */
export function cpuMeter(sys: System): () => () => number {
  const natsPid = (sys.nats as { pid?: number }).pid;
  const pids = [...sys.procs.map((p) => p.proc.pid!), ...(natsPid ? [natsPid] : [])];
  const total = () => pids.reduce((sum, pid) => sum + processCpuMs(pid), processCpuMs('self'));
  return () => {
    const from = total();
    return () => total() - from;
  };
}

/**
 * Spans recorded while `fn` runs, with what the daemons logged in that time, summed per step
 * into `breakdown` under `title` (per lifecycle: `lifecycles` of them ran).
 */
export async function measuredWindow<T>(
  sys: System,
  spans: Span[],
  breakdown: string[],
  title: string,
  lifecycles: number,
  fn: () => Promise<T>,
): Promise<T> {
  spans.length = 0;
  const from = Date.now();
  const r = await fn();
  // The daemons' async log writes land a moment after the reply.
  await new Promise((res) => setTimeout(res, 300));
  const rows = summarizeSpans([...spans, ...daemonSpans(sys.procs, from, Date.now())]);
  breakdown.push(...formatBreakdown(title, rows, lifecycles));
  return r;
}

export interface LifecycleComparison {
  /** compareRuns' answer: wall ms per run of each side and the per-pair ratios. */
  candidate: Sample;
  baseline: Sample;
  pairs: Sample;
  /** CPU ms per container of each side, warm-up runs left out. */
  cpuSystem: Sample;
  cpuDirect: Sample;
}

/** CPU per container from the meter's readings, the first `warmup` of each side left out. */
export function cpuSamples(
  cpu: { system: number[]; direct: number[] },
  warmup: number,
): Pick<LifecycleComparison, 'cpuSystem' | 'cpuDirect'> {
  return { cpuSystem: summarize(cpu.system.slice(warmup)), cpuDirect: summarize(cpu.direct.slice(warmup)) };
}

/**
 * The two figures of a lifecycle mode: containers/s against the same filesystem work done
 * directly (ratio: median of the per-pair ratios; spread: their interquartile range), and CPU ms
 * per container of all processes against the direct work's. `k` lifecycles ran per run.
 */
export function lifecycleFigures(name: string, r: LifecycleComparison, k: number, goal: string): Figure[] {
  const perSec = (ms: number) => (1000 * k) / ms;
  return [
    {
      name: `${name} containers/s (ratio: median of per-pair ratios; spread: their IQR)`,
      value: perSec(r.candidate.median),
      unit: 'ctr/s',
      baseline: { name: 'same fs work direct', value: perSec(r.baseline.median) },
      ratio: 1 / r.pairs.median,
      better: 'higher',
      spread: r.pairs.iqr,
      runs: r.pairs.runs,
      goal,
    },
    {
      name: `${name} CPU ms per container (all processes)`,
      value: r.cpuSystem.median,
      unit: 'ms',
      baseline: { name: 'same fs work direct', value: r.cpuDirect.median },
      ratio: r.cpuSystem.median / r.cpuDirect.median,
      better: 'lower',
      spread: r.cpuSystem.iqr,
      runs: r.cpuSystem.runs,
    },
  ];
}
