/**
 * Benchmarks compare every figure with a baseline measured in the same process and run, because
 * these machines are shared and noisy: absolute times alone mean little, ratios travel.
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export interface Sample {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median: how much the runs disagreed. */
  spread: number;
  /** First and third quartile (linear interpolation between ranks). */
  q1: number;
  q3: number;
  /**
   * (q3 - q1) / median: how much the middle half of the runs disagreed. One run hit by a
   * neighbour's burst moves `spread` as much as a real change would, but not this.
   */
  iqr: number;
  runs: number;
}

export function summarize(values: readonly number[]): Sample {
  if (values.length === 0) throw new Error('no samples');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const min = sorted[0]!;
  const max = sorted[sorted.length - 1]!;
  const q1 = quantile(sorted, 0.25);
  const q3 = quantile(sorted, 0.75);
  const rel = (d: number) => (median === 0 ? 0 : d / median);
  return { median, min, max, spread: rel(max - min), q1, q3, iqr: rel(q3 - q1), runs: values.length };
}

/** The q-quantile of sorted values, interpolating between ranks. */
function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** Times `fn` `runs` times (after `warmup` untimed runs), in milliseconds. */
export async function timeRuns(
  fn: () => Promise<unknown> | unknown,
  runs: number,
  warmup = 1,
): Promise<Sample> {
  for (let i = 0; i < warmup; i++) await fn();
  const values: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    values.push(performance.now() - t0);
  }
  return summarize(values);
}

/**
 * Runs candidate and baseline alternately, so drift in machine load hits both alike.
 * `setup` runs before each timed call, untimed (e.g. to rebuild a tree). `warmup` pairs run
 * first, untimed (caches, JIT, the first KV writes). `pairs` is the candidate/baseline time ratio
 * of each adjacent pair: the two ran under nearly the same load, so its median and interquartile
 * spread say more on a shared machine than the ratio of the two medians.
 */
export async function compareRuns(opts: {
  runs: number;
  candidate: () => Promise<unknown>;
  baseline: () => Promise<unknown>;
  setup?: () => Promise<unknown>;
  warmup?: number;
}): Promise<{ candidate: Sample; baseline: Sample; ratio: number; pairs: Sample }> {
  for (let i = 0; i < (opts.warmup ?? 0); i++) {
    await opts.setup?.();
    await opts.candidate();
    await opts.setup?.();
    await opts.baseline();
  }
  const c: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < opts.runs; i++) {
    for (const [fn, out] of i % 2 === 0
      ? ([
          [opts.candidate, c],
          [opts.baseline, b],
        ] as const)
      : ([
          [opts.baseline, b],
          [opts.candidate, c],
        ] as const)) {
      await opts.setup?.();
      const t0 = performance.now();
      await fn();
      out.push(performance.now() - t0);
    }
  }
  const candidate = summarize(c);
  const baseline = summarize(b);
  return {
    candidate,
    baseline,
    ratio: candidate.median / baseline.median,
    pairs: summarize(c.map((x, i) => x / b[i]!)),
  };
}

/**
 * CPU time (user + system, with that of its reaped children) a process has used, in ms, from
 * /proc/<pid>/stat. Work a process hands to a child (rsync, chown, mount) counts once the child
 * was waited for. Unlike wall time, it does not grow with the other processes sharing the cores.
 */
export function processCpuMs(pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces), from field 3 (state) on.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i]), 0);
  return (ticks * 1000) / CLOCK_TICKS_PER_SECOND;
}

/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

export interface Figure {
  /** What was measured, e.g. "shift 100k entries (tmpfs)". */
  name: string;
  value: number;
  unit: string;
  /** The baseline measured in the same run, when the figure has one. */
  baseline?: { name: string; value: number };
  /** value / baseline.value (for times: lower is better; say otherwise in `better`). */
  ratio?: number;
  better?: 'lower' | 'higher';
  spread?: number;
  runs?: number;
  goal?: string;
}

/** Where reports go: $BENCH_OUT_DIR, else <repo>/bench-results (not committed). */
export function benchOutDir(): string {
  return process.env.BENCH_OUT_DIR ?? resolve(import.meta.dirname, '../../../bench-results');
}

/** Writes one suite's figures as JSON for the report and prints them as a table. */
export async function writeFigures(
  suite: string,
  figures: Figure[],
  log: (line: string) => void,
): Promise<void> {
  const dir = benchOutDir();
  await mkdir(dir, { recursive: true });
  const doc = { suite, date: new Date().toISOString(), figures };
  await writeFile(join(dir, `${suite}.json`), `${JSON.stringify(doc, null, 2)}\n`);
  for (const line of formatTable(figures)) log(line);
}

export function formatTable(figures: readonly Figure[]): string[] {
  const rows = figures.map((f) => [
    f.name,
    `${round(f.value)} ${f.unit}`,
    f.baseline ? `${f.baseline.name}: ${round(f.baseline.value)} ${f.unit}` : '',
    f.ratio === undefined ? '' : `${round(f.ratio)}x`,
    f.spread === undefined ? '' : `±${Math.round(f.spread * 100)}%`,
    f.goal ?? '',
  ]);
  const head = ['figure', 'value', 'baseline (same run)', 'ratio', 'spread', 'goal'];
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
}

function round(n: number): string {
  if (Math.abs(n) >= 100) return String(Math.round(n));
  if (Math.abs(n) >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/**
 * A small deterministic PRNG (mulberry32): a seed names one random tree, one kill schedule, one
 * run, so a bench or a chaos run can be replayed from the seed it printed.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
