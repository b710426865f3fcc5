/**
 * Benchmarks compare every figure with a baseline measured in the same process and run, because
 * these machines are shared and noisy: absolute times alone mean little, ratios travel.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export interface Sample {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median: how much the runs disagreed. */
  spread: number;
  runs: number;
}

export function summarize(values: readonly number[]): Sample {
  if (values.length === 0) throw new Error('no samples');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const min = sorted[0]!;
  const max = sorted[sorted.length - 1]!;
  return { median, min, max, spread: median === 0 ? 0 : (max - min) / median, runs: values.length };
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
 * `setup` runs before each timed call, untimed (e.g. to rebuild a tree).
 */
export async function compareRuns(opts: {
  runs: number;
  candidate: () => Promise<unknown>;
  baseline: () => Promise<unknown>;
  setup?: () => Promise<unknown>;
}): Promise<{ candidate: Sample; baseline: Sample; ratio: number }> {
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
  return { candidate, baseline, ratio: candidate.median / baseline.median };
}

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
