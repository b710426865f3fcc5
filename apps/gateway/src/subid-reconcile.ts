/**
 * Gives a restarted gateway the subid ranges its predecessor held but had not written yet
 * (table.ts: SubidAlloc makes no KV write; the record's next write carries the range). At start,
 * every container that is not stopped and has no range on record is a candidate; the allocator's
 * list says which of them hold a range, and that range is checked as any allocator answer and
 * written into the record.
 *
 * Each candidate's adoption is queued on its container's lock before the gRPC socket opens, so a
 * call for that container (a ReqMounts that needs the range) waits for it instead of finding no
 * mapping. A gateway whose predecessor stopped cleanly usually has no candidate and asks nothing.
 * When the allocator does not answer within its call bounds, the locks are let go (the calls go
 * on without the range, as they would with no allocation) and the adoption is tried again on the
 * retry schedule until it is done.
 */
import { subidList, type SubidAllocation } from '@sysbox-mgr-ts/contracts';
import { allPages, type Logger, type ServiceClient } from '@sysbox-mgr-ts/service-kit';
import type { RetrySchedule } from './background-retry.js';
import { withSubidRange, type ContainerRecord } from './record.js';
import type { ReplyChecks } from './reply-checks.js';
import { startReconcile, type StartReconcile } from './start-reconcile.js';
import type { ContainerTable } from './table.js';

export type SubidReconcile = StartReconcile;

export function startSubidReconcile(opts: {
  /** The table as just read at start. */
  records: ContainerRecord[];
  table: ContainerTable;
  services: ServiceClient;
  checks: ReplyChecks;
  retry: RetrySchedule;
  log: Logger;
}): SubidReconcile {
  const { table, services, checks, log } = opts;

  /** One pass: the allocator's list once, then each candidate under its lock. */
  const pass = (ids: string[]): Promise<void>[] => {
    const held = allPages((cursor) => services.call(subidList, { cursor })).then(
      (pages) => new Map<string, SubidAllocation>(pages.flatMap((p) => p.allocations).map((a) => [a.id, a])),
    );
    // Awaited inside each adoption, which may start only after earlier calls on its container.
    held.catch(() => undefined);
    return ids.map((id) =>
      table.serialized(id, async () => {
        const range = (await held).get(id);
        const rec = await table.get(id);
        if (!range || !rec || rec.subidAllocated || rec.state === 'stopped') return;
        await checks.subids(id, range);
        await table.save(withSubidRange(rec, range));
        log.info(
          { id, uid: range.uid, gid: range.gid },
          'adopted the subid range the allocator holds for a container whose record had none',
        );
      }),
    );
  };

  return startReconcile({
    ids: opts.records.filter((r) => r.state !== 'stopped' && !r.subidAllocated).map((r) => r.id),
    pass,
    retry: opts.retry,
    log,
    what: 'could not adopt the subid range of a container yet',
  });
}
