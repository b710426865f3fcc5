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

  it('starts from a list it is handed without reading the table, and reads the table at its next reload', async () => {
    let reads = 0;
    const watcher = createRemovalWatcher({
      intervalMs: 60_000,
      resyncEveryTicks: 1,
      exists: async () => true,
      list: async () => (reads++, [{ id: 'b', path: '/b' }]),
      onRemoved: async () => undefined,
      log: silentLogger(),
    });
    await watcher.start([{ id: 'a', path: '/a' }]);
    expect(reads).toBe(0);
    expect(watcher.watching()).toEqual([{ id: 'a', path: '/a' }]);
    await watcher.tick();
    await watcher.stop();
    expect(reads).toBe(1);
    expect(watcher.watching()).toEqual([{ id: 'b', path: '/b' }]);
  });

  it('sees and releases a removal while a table reload and another release are stuck (a JetStream election)', async () => {
    const gone = new Set<string>();
    let releaseStuck: (() => void) | undefined;
    let reloadStuck: (() => void) | undefined;
    let reloads = 0;
    const released: string[] = [];
    const watcher = createRemovalWatcher({
      intervalMs: 60_000,
      resyncEveryTicks: 1,
      exists: async (p) => !gone.has(p),
      list: async () => {
        // The first reload (start) answers; later ones hang until let go.
        if (reloads++ > 0) await new Promise<void>((r) => (reloadStuck = r));
        return [{ id: 'slow', path: '/slow' }];
      },
      onRemoved: async (id) => {
        if (id === 'slow') await new Promise<void>((r) => (releaseStuck = r));
        released.push(id);
      },
      log: silentLogger(),
    });
    await watcher.start();
    gone.add('/slow');
    const slowTick = watcher.tick();
    await new Promise((r) => setTimeout(r, 10));
    expect(releaseStuck).toBeDefined();
    expect(reloadStuck).toBeDefined();

    // Unregistered while the reload is reading the table: the reload must not drop it.
    watcher.watch('quick', '/quick');
    gone.add('/quick');
    await watcher.tick();
    expect(released).toEqual(['quick']);

    releaseStuck!();
    await slowTick;
    reloadStuck!();
    await watcher.stop();
    expect(released).toEqual(['quick', 'slow']);
  });

  it('keeps a watch added while a reload reads an older table, and drops one unwatched meanwhile', async () => {
    let answer: ((list: { id: string; path: string }[]) => void) | undefined;
    let first = true;
    const watcher = createRemovalWatcher({
      intervalMs: 60_000,
      resyncEveryTicks: 1,
      exists: async () => true,
      list: () => {
        if (first) {
          first = false;
          return Promise.resolve([{ id: 'old', path: '/old' }]);
        }
        return new Promise((r) => (answer = r));
      },
      onRemoved: async () => undefined,
      log: silentLogger(),
    });
    await watcher.start();
    await watcher.tick();
    watcher.watch('new', '/new');
    watcher.unwatch('old');
    // The table read began before both changes and still lists 'old', not 'new'.
    answer!([
      { id: 'old', path: '/old' },
      { id: 'other-gateway', path: '/other' },
    ]);
    await watcher.stop();
    expect(watcher.watching().sort((a, b) => a.id.localeCompare(b.id))).toEqual([
      { id: 'new', path: '/new' },
      { id: 'other-gateway', path: '/other' },
    ]);
  });
});
