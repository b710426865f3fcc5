import { describe, expect, it } from 'vitest';
import { compareRuns, formatTable, percentile, summarize } from './index.js';

describe('bench-kit', () => {
  it('summarizes medians and spread', () => {
    expect(summarize([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3, spread: 1, runs: 3 });
    expect(summarize([1, 2, 3, 4]).median).toBe(2.5);
    expect(() => summarize([])).toThrow();
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
  });
  it('formats a table with ratios', () => {
    const t = formatTable([{ name: 'x', value: 2, unit: 'ms', baseline: { name: 'b', value: 1 }, ratio: 2 }]);
    expect(t[2]).toContain('2.00x');
  });
});
