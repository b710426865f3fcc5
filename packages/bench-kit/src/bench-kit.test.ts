import { describe, expect, it } from 'vitest';
import { compareRuns, formatTable, percentile, processCpuMs, summarize } from './index.js';

describe('bench-kit', () => {
  it('summarizes medians and spread', () => {
    expect(summarize([3, 1, 2])).toEqual({
      median: 2,
      min: 1,
      max: 3,
      spread: 1,
      q1: 1.5,
      q3: 2.5,
      iqr: 0.5,
      runs: 3,
    });
    expect(summarize([1, 2, 3, 4]).median).toBe(2.5);
    expect(() => summarize([])).toThrow();
  });
  it('keeps one outlier out of the interquartile spread', () => {
    const s = summarize([10, 10, 10, 11, 11, 11, 40]);
    expect(s.spread).toBeCloseTo(30 / 11);
    expect(s.iqr).toBeCloseTo(1 / 11);
  });
  it('takes percentiles', () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(v, 50)).toBe(50);
    expect(percentile(v, 99)).toBe(99);
  });
  it('compares alternately against a baseline', async () => {
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const r = await compareRuns({ runs: 3, candidate: () => wait(20), baseline: () => wait(2) });
    expect(r.ratio).toBeGreaterThan(2);
    expect(r.candidate.runs).toBe(3);
    expect(r.pairs.runs).toBe(3);
    expect(r.pairs.median).toBeGreaterThan(2);
  });
  it('runs warm-up pairs untimed', async () => {
    let calls = 0;
    const r = await compareRuns({
      runs: 2,
      warmup: 1,
      candidate: async () => void calls++,
      baseline: async () => void calls++,
    });
    expect(calls).toBe(6);
    expect(r.baseline.runs).toBe(2);
  });
  it('reads CPU time, children included once reaped', async () => {
    const { execFileSync } = await import('node:child_process');
    const before = processCpuMs('self');
    // A child that burns CPU and says how much: its time lands in our cutime once waited for.
    const burn =
      'let x = 0; for (let i = 0; i < 2e8; i++) x += i; const u = process.cpuUsage(); console.log((u.user + u.system) / 1000);';
    const childMs = Number(execFileSync(process.execPath, ['-e', burn], { encoding: 'utf8' }));
    expect(childMs).toBeGreaterThan(50);
    // Ticks of 10 ms, counted apart for user and system time, in the child and in us.
    expect(processCpuMs('self') - before).toBeGreaterThanOrEqual(childMs - 40);
  });
  it('formats a table with ratios', () => {
    const t = formatTable([{ name: 'x', value: 2, unit: 'ms', baseline: { name: 'b', value: 1 }, ratio: 2 }]);
    expect(t[2]).toContain('2.00x');
  });
});
