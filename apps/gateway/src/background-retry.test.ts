import { afterEach, describe, expect, it, vi } from 'vitest';
import { askUntilAnswered } from './background-retry.js';

describe('asking a silent shiftfs-mgr again', () => {
  afterEach(() => void vi.useRealTimers());
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('asks after firstMs, then at doubling intervals up to maxMs, until an answer, which it hands over once', async () => {
    vi.useFakeTimers();
    const asks: number[] = [];
    const answers: string[] = [];
    const started = Date.now();
    const watch = askUntilAnswered(
      async () => {
        asks.push(Date.now() - started);
        return asks.length < 7 ? undefined : 'yes';
      },
      (a) => answers.push(a),
      { firstMs: 10, maxMs: 20 },
    );
    await vi.advanceTimersByTimeAsync(1000);
    expect(answers).toEqual(['yes']);
    expect(asks).toHaveLength(7);
    // 10, then doubling but capped at 20: without maxMs the seventh would come 640 ms after the sixth.
    expect(asks.map((t, i) => t - (asks[i - 1] ?? 0))).toEqual([10, 20, 20, 20, 20, 20, 20]);
    await watch.stop();
  });

  it('stop() ends it: it waits for an ask in flight and drops its answer', async () => {
    let asks = 0;
    const answers: string[] = [];
    const watch = askUntilAnswered(
      async () => {
        asks++;
        await sleep(50);
        return 'late';
      },
      (a) => answers.push(a),
      { firstMs: 10, maxMs: 10 },
    );
    await sleep(20);
    await watch.stop();
    expect(asks).toBe(1);
    await sleep(100);
    expect(answers).toEqual([]);
    expect(asks).toBe(1);
  });
});
