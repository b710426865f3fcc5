import { describe, expect, it } from 'vitest';
import { allPages, pageOf } from './page.js';

const items = Array.from({ length: 25 }, (_, i) => ({
  id: `c${String(i).padStart(2, '0')}`,
  pad: 'x'.repeat(100),
}));

describe('pageOf', () => {
  it('walks a list in key order, a page at a time, each item exactly once', async () => {
    const shuffled = [...items].reverse();
    const pages = await allPages(async (cursor) => pageOf(shuffled, (x) => x.id, { cursor, limit: 10 }));
    expect(pages.map((p) => p.items.length)).toEqual([10, 10, 5]);
    expect(pages.flatMap((p) => p.items.map((x) => x.id))).toEqual(items.map((x) => x.id));
    expect(pages.at(-1)!.next).toBeUndefined();
  });

  it('ends a page early to stay under the byte bound, never with an empty page', () => {
    const page = pageOf(items, (x) => x.id, { limit: 2000 }, 500);
    expect(page.items.length).toBe(4);
    expect(page.next).toBe('c03');
    expect(pageOf(items, (x) => x.id, {}, 10).items).toHaveLength(1);
  });
});
