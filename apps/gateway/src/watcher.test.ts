import { describe, expect, it } from 'vitest';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { createRemovalWatcher } from './watcher.js';

describe('removal watcher', () => {
  it('releases the containers whose rootfs is gone side by side, at most parallelReleases at once', async () => {
    let running = 0;
    let peak = 0;
    const released: string[] = [];
    const watcher = createRemovalWatcher({
      intervalMs: 60_000,
      exists: async (p) => p.startsWith('/here'),
      list: async () => [
        ...Array.from({ length: 6 }, (_, i) => ({ id: `gone${i}`, path: `/gone/${i}` })),
        { id: 'alive', path: '/here/1' },
      ],
      onRemoved: async (id) => {
        peak = Math.max(peak, ++running);
        await new Promise((r) => setTimeout(r, 30));
        running--;
        released.push(id);
        if (id === 'gone3') throw new Error('service down');
      },
      parallelReleases: 4,
      log: silentLogger(),
    });
    await watcher.start();
    await watcher.tick();
    await watcher.stop();
    expect(released.sort()).toEqual(['gone0', 'gone1', 'gone2', 'gone3', 'gone4', 'gone5']);
    expect(peak).toBe(4);
    // A failed release leaves it to the next table reload; the live one is still watched.
    expect(watcher.watching()).toEqual([{ id: 'alive', path: '/here/1' }]);
  });
});
