import { describe, expect, it, vi } from 'vitest';
import { withinTime } from './time-bound.js';

describe('withinTime', () => {
  it('answers with the work when it settles first, and leaves no timer behind', async () => {
    vi.useFakeTimers();
    try {
      await expect(withinTime(Promise.resolve(7), 1000, 'x')).resolves.toBe(7);
      await expect(withinTime(Promise.reject(new Error('boom')), 1000, 'x')).rejects.toThrow('boom');
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('fails with a typed timeout naming what did not answer, once the bound passes first', async () => {
    vi.useFakeTimers();
    try {
      const late = withinTime(new Promise(() => undefined), 250, 'mount overlay on /m');
      const seen = expect(late).rejects.toMatchObject({
        code: 'timeout',
        message: 'mount overlay on /m: no answer within 250 ms',
      });
      await vi.advanceTimersByTimeAsync(249);
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      await seen;
    } finally {
      vi.useRealTimers();
    }
  });
});
