/** The subid service's bindings: one handler per contract of `subidService`, over an injected allocator. */
import {
  subidAlloc,
  subidFree,
  subidList,
  subidSummary,
  type SubidAlloc,
  type SubidSummaryReply,
} from '@sysbox-mgr-ts/contracts';
import { handle, type Binding } from '@sysbox-mgr-ts/service-kit';

export function createSubidBindings(deps: {
  allocator: SubidAlloc & { summary(): Promise<SubidSummaryReply> };
}): Binding[] {
  const { allocator } = deps;
  return [
    handle(subidAlloc, (req) => allocator.alloc(req.id, req.size)),
    handle(subidFree, async (req) => {
      await allocator.free(req.id);
      return {};
    }),
    handle(subidList, (req) => allocator.list(req)),
    handle(subidSummary, () => allocator.summary()),
  ];
}
