/**
 * Runs boot.ts's decisions: a record of an earlier boot is turned into the stopped container the
 * reboot left (what Unregister would have undone on disk undone first), an unstamped one stamped.
 * Register runs it for the record it meets; the gateway, at start, for every record
 * (startBootReconcile), queued on each container's lock before the socket opens.
 */
import { rootfsRevertUpper, volRevertPrep } from '@sysbox-mgr-ts/contracts';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { RetrySchedule } from './background-retry.js';
import { bootDecision } from './boot.js';
import type { NetnsSharing } from './netns.js';
import type { ContainerRecord } from './record.js';
import type { ServiceCall } from './service-call.js';
import { startReconcile, type StartReconcile } from './start-reconcile.js';
import type { ContainerTable } from './table.js';

/** The record as this boot sees it; runs under the container's lock. */
export type BootSettle = (rec: ContainerRecord) => Promise<ContainerRecord>;

/**
 * Unchanged when of this boot; stamped when it predates stamps; of an earlier boot, stopped. A
 * failed revert of the upper dir throws (the record stays of the earlier boot and is tried
 * again); a failed revert of the mount preparation is left on the record, where the removal
 * retries it, as Unregister does.
 */
export function createBootSettle(deps: {
  table: Pick<ContainerTable, 'save'>;
  call: ServiceCall;
  netns: Pick<NetnsSharing, 'untrack'>;
  bootId: string;
  log: Logger;
}): BootSettle {
  const { table, call, netns, bootId, log } = deps;
  return async (rec) => {
    const decision = bootDecision(rec, bootId);
    if (decision.kind === 'this-boot') return rec;
    if (decision.kind === 'stamp') {
      await table.save(decision.record);
      return decision.record;
    }
    const { plan } = decision;
    const { id } = rec;
    const next = { ...plan.record, requested: { ...plan.record.requested } };
    if (plan.revertUpper)
      await call(id, 'revert of the rootfs upper-dir chown after a reboot', rootfsRevertUpper, { id }, true);
    if (plan.revertPrep) {
      try {
        await call(id, 'revert of mount preparation after a reboot', volRevertPrep, { id }, true);
      } catch (err) {
        log.warn({ id, err }, 'failed to revert mount preparation after a reboot; the removal retries it');
        next.mountsPrepped = true;
      }
    }
    if (plan.untrackNetns !== 0)
      await netns
        .untrack(id, plan.untrackNetns)
        .catch((err: unknown) => log.warn({ id, err }, 'netns untrack failed'));
    await table.save(next, rec.state);
    log.info(
      { id, was: rec.state, boot: rec.boot, watch: next.rmWatchPath },
      'container of an earlier boot: stopped, its mounts forgotten, its volumes and subid range kept',
    );
    return next;
  };
}

/**
 * Settles every record of an earlier boot among `records` (the table just read) and stamps
 * unstamped ones; each is queued on its container's lock at once, so call it before the socket opens.
 */
export function startBootReconcile(opts: {
  records: ContainerRecord[];
  table: Pick<ContainerTable, 'get' | 'serialized'>;
  settle: BootSettle;
  bootId: string;
  retry: RetrySchedule;
  log: Logger;
}): StartReconcile {
  const { table, settle } = opts;
  return startReconcile({
    ids: opts.records.filter((r) => bootDecision(r, opts.bootId).kind !== 'this-boot').map((r) => r.id),
    pass: (ids) =>
      ids.map((id) =>
        table.serialized(id, async () => {
          const rec = await table.get(id);
          if (rec) await settle(rec);
        }),
      ),
    retry: opts.retry,
    log: opts.log,
    what: 'could not settle a container of an earlier boot yet',
  });
}
