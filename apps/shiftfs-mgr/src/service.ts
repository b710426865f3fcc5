/** The shiftfs service's handlers, one per contract, built from the marks domain module. */
import {
  shiftfsList,
  shiftfsMark,
  shiftfsSummary,
  shiftfsUnmark,
  shiftfsUnmarkAll,
} from '@sysbox-mgr-ts/contracts';
import { handle, pageOf, type Binding } from '@sysbox-mgr-ts/service-kit';
import type { ShiftfsMarks } from './marks.js';
import type { ShiftfsProbe } from './probe.js';

export function createShiftfsBindings(marks: ShiftfsMarks, probe: ShiftfsProbe): Binding[] {
  return [
    handle(shiftfsMark, async (req, ctx) => ({
      mounts: await marks.mark(req.id, req.mounts, req.createMarkpoint, ctx.log),
    })),
    handle(shiftfsUnmark, async (req, ctx) => {
      await marks.unmark(req.id, req.mounts, ctx.log);
      return {};
    }),
    handle(shiftfsUnmarkAll, async (_req, ctx) => marks.unmarkAll(ctx.log)),
    handle(shiftfsList, async (req) => {
      const page = pageOf(await marks.list(), (m) => m.source, req);
      return { ...probeReply(probe), marks: page.items, next: page.next };
    }),
    handle(shiftfsSummary, async () => ({
      supported: probe.supported,
      supportedOnOverlayfs: probe.onOverlayfs.supported,
      marks: await marks.count(),
    })),
  ];
}

/** What `list` tells about the probe, besides the marks. */
function probeReply(probe: ShiftfsProbe) {
  return {
    supported: probe.supported,
    supportedOnOverlayfs: probe.onOverlayfs.supported,
    inKernel: probe.inKernel,
    reason: probe.reason,
    reasonOnOverlayfs: probe.onOverlayfs.reason,
  };
}

/** `$SRV.INFO` metadata: lets the gateway and operators see whether marks can work on this node. */
export function shiftfsMetadata(probe: ShiftfsProbe): Record<string, string> {
  return { shiftfs: String(probe.supported), shiftfsOnOverlayfs: String(probe.onOverlayfs.supported) };
}
