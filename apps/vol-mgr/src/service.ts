/** The vol service's handlers: four per volume kind, plus prep, revert-prep, list and summary. */
import {
  VOLUME_KINDS,
  volByKind,
  volList,
  volPrep,
  volRevertPrep,
  volSummary,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import { pageOf } from '@sysbox-mgr-ts/service-kit';
import { handle, type Binding } from '@sysbox-mgr-ts/service-kit';
import type { MountPrep } from './prep.js';
import type { VolumeManager } from './volumes.js';

/** `du` processes one list page runs at a time. */
const LIST_SIZE_CONCURRENCY = 4;

export function createVolBindings(volumes: Record<VolumeKind, VolumeManager>, prep: MountPrep): Binding[] {
  const perKind = VOLUME_KINDS.flatMap((kind) => {
    const c = volByKind[kind];
    const mgr = volumes[kind];
    return [
      handle(c.create, (req, ctx) => mgr.createVol(req, ctx.log)),
      handle(c.destroy, async (req, ctx) => {
        await mgr.destroyVol(req.id, ctx.log);
        return {};
      }),
      handle(c.syncOut, async (req, ctx) => {
        await mgr.syncOut(req.id, ctx.log, req.timeLimit);
        return {};
      }),
      handle(c.syncOutAndDestroyAll, () => mgr.syncOutAndDestroyAll()),
    ];
  });
  return [
    ...perKind,
    handle(volPrep, (req, ctx) => prep.prep(req, ctx.log)),
    handle(volRevertPrep, (req, ctx) => prep.revertPrep(req.id, ctx.log)),
    handle(volList, async (req) => {
      const kinds = req.kind ? [req.kind] : VOLUME_KINDS;
      const lists = await Promise.all(kinds.map((k) => volumes[k].list({ sizes: false })));
      // One ordered stream for the pages: preps (p/<source>) then volumes (v/<kind>/<id>).
      const entries = [
        ...(await prep.list()).map((p) => ({ key: `p/${p.source}`, prep: p })),
        ...lists.flat().map((v) => ({ key: `v/${v.kind}/${v.id}`, volume: v })),
      ];
      const page = pageOf(entries, (e) => e.key, req);
      const onPage = page.items.flatMap((e) => ('volume' in e ? [e.volume] : []));
      // Sized here, for this page only, a few at a time (one `du` each), unless asked not to.
      const sized = req.sizes === false ? [] : onPage;
      for (let i = 0; i < sized.length; i += LIST_SIZE_CONCURRENCY)
        await Promise.all(
          sized
            .slice(i, i + LIST_SIZE_CONCURRENCY)
            .map(async (v) => (v.sizeBytes = await volumes[v.kind].sizeOf(v.id))),
        );
      return {
        volumes: onPage,
        preps: page.items.flatMap((e) => ('prep' in e ? [e.prep] : [])),
        next: page.next,
      };
    }),
    handle(volSummary, async () => {
      const counts = await Promise.all(VOLUME_KINDS.map(async (k) => [k, await volumes[k].count()] as const));
      return { volumes: Object.fromEntries(counts) as Record<VolumeKind, number>, preps: await prep.count() };
    }),
  ];
}
