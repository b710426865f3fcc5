import { VOLUME_KINDS, volList, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { silentLogger, type RequestContext } from '@sysbox-mgr-ts/service-kit';
import { describe, expect, it } from 'vitest';
import type { MountPrep } from './prep.js';
import { createVolBindings } from './service.js';
import type { VolumeManager } from './volumes.js';

describe('vol.list', () => {
  it('sizes the volumes of the page it answers only (one du each), not every volume per page (#25)', async () => {
    let sized = 0;
    const volumeManager = (kind: VolumeKind, n: number): VolumeManager => {
      const infos = Array.from({ length: n }, (_, i) => ({
        kind,
        id: `c${String(i).padStart(4, '0')}`,
        path: `/v/${kind}/c${i}`,
        mountpoint: '/var/lib/docker',
        syncOutTarget: `/r/c${i}/var/lib/docker`,
        uid: 165536,
        gid: 165536,
        chownOnSync: true,
        sizeBytes: 0,
        createdAt: '2026-01-01T00:00:00.000Z',
      }));
      return {
        list: async (opts: { sizes?: boolean } = {}) =>
          infos.map((v) => (opts.sizes === false ? { ...v } : { ...v, sizeBytes: ++sized })),
        sizeOf: async () => ++sized,
      } as unknown as VolumeManager;
    };
    const volumes = Object.fromEntries(
      VOLUME_KINDS.map((k) => [k, volumeManager(k, k === 'docker' ? 250 : 0)]),
    ) as Record<VolumeKind, VolumeManager>;
    const prep = { list: async () => [] } as unknown as MountPrep;
    const list = createVolBindings(volumes, prep).find((b) => b.contract === volList)!;
    const ctx = { log: silentLogger } as unknown as RequestContext;

    const page = (await list.handler({ limit: 100 }, ctx)) as {
      volumes: { sizeBytes: number }[];
      next?: string;
    };
    expect(page.volumes).toHaveLength(100);
    expect(page.next).toBeDefined();
    expect(sized).toBe(100);
    expect(page.volumes.every((v) => v.sizeBytes > 0)).toBe(true);

    // An inventory asks for ids only: no du at all, sizes 0 (#28).
    const unsized = (await list.handler({ limit: 100, sizes: false }, ctx)) as typeof page;
    expect(unsized.volumes).toHaveLength(100);
    expect(sized).toBe(100);
    expect(unsized.volumes.every((v) => v.sizeBytes === 0)).toBe(true);
  });
});
