/**
 * The 13 RPCs of upstream's mgr.go, each run the same way under its container's lock: read the
 * record from the table, decide (plans/*.ts: record, request, config -> service calls and next
 * record), run the calls (executor.ts, volumes.ts, netns.ts), save the next record once per step.
 * Input arrives parsed and typed from the gRPC edge (wire.ts); the table is the gateway's one
 * state, built once in core.ts.
 */
import {
  SysboxError,
  isSysboxError,
  rootfsChownClone,
  rootfsList,
  rootfsRevertChown,
  subidAlloc,
  type OciMount,
  type ShiftfsMount,
} from '@sysbox-mgr-ts/contracts';
import { allPages, type Logger } from '@sysbox-mgr-ts/service-kit';
import type { BootSettle } from './boot-settle.js';
import { containerConfig, type MgrConfig } from './container-config.js';
import type { Executor } from './executor.js';
import type { NetnsSharing } from './netns.js';
import { adoptClone, clonePlan, markPlan, type CloneReply } from './plans/clone.js';
import { fsStatePlan, type FsEntry } from './plans/fs-state.js';
import { mountsAfter, mountsAnswer, prepPlan, reqMountsPlan } from './plans/mounts.js';
import { recordUpperChown, registerPlan, updatePlan } from './plans/register.js';
import { afterStop, pauseCalls, resumeCalls, stoppedRecord, unregisterPlan } from './plans/stop.js';
import type { HostChecks, HostFacts } from './probes.js';
import { firstMapping, withSubidRange, type ContainerRecord } from './record.js';
import type { ReplyChecks } from './reply-checks.js';
import type { ContainerTable } from './table.js';
import type { VolumePolicy } from './volumes.js';
import type {
  ChownClonedRootfsInput,
  ContainerConfig,
  IdInput,
  PrepMountsInput,
  RegisterInput,
  ReqFsStateInput,
  ReqMountsInput,
  ReqShiftfsMarkInput,
  SubidAllocInput,
  UpdateInput,
} from './wire.js';

/** sysbox-runc's 13 calls. */
export interface Manager {
  register(req: RegisterInput): Promise<ContainerConfig>;
  update(req: UpdateInput): Promise<void>;
  unregister(req: IdInput): Promise<void>;
  subidAlloc(req: SubidAllocInput): Promise<{ uid: number; gid: number }>;
  prepMounts(req: PrepMountsInput): Promise<void>;
  reqMounts(req: ReqMountsInput): Promise<OciMount[]>;
  reqShiftfsMark(req: ReqShiftfsMarkInput): Promise<ShiftfsMount[]>;
  reqFsState(req: ReqFsStateInput): Promise<FsEntry[]>;
  pause(req: IdInput): Promise<void>;
  resume(req: IdInput): Promise<void>;
  cloneRootfs(req: IdInput): Promise<string>;
  chownClonedRootfs(req: ChownClonedRootfsInput): Promise<void>;
  revertClonedRootfsChown(req: IdInput): Promise<void>;
}

export interface ManagerDeps {
  table: ContainerTable;
  exec: Executor;
  netns: NetnsSharing;
  volumes: VolumePolicy;
  checks: ReplyChecks;
  host: HostChecks;
  facts: HostFacts;
  /** Read at every call: the gateway fills shiftfs support in place when shiftfs-mgr answers late. */
  config: MgrConfig;
  /** A record of an earlier boot, settled (boot-settle.ts). */
  settleBoot: BootSettle;
  bootId: string;
  log: Logger;
  /** Whether the container runtime removes the container when it stops (Docker's `--rm`). */
  autoRemove?: (id: string) => Promise<boolean>;
}

/** rootfs-cloner's record of this container's clone, as create-clone would have answered it. */
async function existingClone(exec: Executor, id: string): Promise<CloneReply | undefined> {
  const pages = await allPages((cursor) => exec.call(id, 'clone lookup', rootfsList, { cursor }));
  const c = pages.flatMap((p) => p.clones).find((x) => x.id === id);
  return c && { rootfs: c.cloneRootfs, origWorkDir: c.origWorkDir };
}

/**
 * Asks, in the background as upstream does, whether the runtime will remove the container when it
 * stops; the answer goes on the record, where Unregister reads it.
 */
function autoRemoveNoter({ table, exec, autoRemove, log }: ManagerDeps): (id: string) => void {
  return (id) => {
    if (!autoRemove) return;
    void autoRemove(id)
      .then((removes) => {
        if (!removes) return;
        return table.serialized(id, async () => {
          const rec = await table.get(id);
          if (!rec || rec.autoRemove) return;
          await exec.save({ ...rec, autoRemove: true });
          log.info(
            { id },
            'the runtime removes this container when it stops (docker --rm): no sync-out or upper-dir revert then',
          );
        });
      })
      .catch((err: unknown) => log.warn({ id, err }, 'auto-remove check failed'));
  };
}

export function createManager(deps: ManagerDeps): Manager {
  const { table, exec, netns, volumes, host, facts, config, log } = deps;
  const notRegistered = (id: string): string => `container ${id} is not registered`;
  /** Runs `fn` on the container's record, under its lock. */
  const withRecord = <T>(
    id: string,
    notFound: string,
    fn: (rec: ContainerRecord) => Promise<T>,
  ): Promise<T> => table.serialized(id, async () => fn(await table.mustGet(id, notFound)));

  const noteAutoRemove = autoRemoveNoter(deps);

  const registerOver = async (
    req: RegisterInput,
    existing: ContainerRecord | undefined,
  ): Promise<ContainerConfig> => {
    const { id, rootfs } = req;
    let fresh;
    if (!existing) {
      try {
        fresh = { rootfsOnOvfs: await host.isOnOverlay(rootfs), now: table.now(), bootId: deps.bootId };
      } catch (err) {
        throw new SysboxError(
          'invalid-request',
          `container ${id}: rootfs ${rootfs}: ${(err as Error).message}`,
        );
      }
    }
    const { record, restart } = registerPlan(req, existing ? { existing } : { fresh: fresh! });
    await netns.onRegister(record);
    if (restart) await exec.save(record, 'stopped');
    else await exec.create(record);
    log.info({ id }, restart ? 'registered container' : 'registered new container');
    return containerConfig(config, record);
  };
  const thisBoot = async (rec: ContainerRecord | undefined): Promise<ContainerRecord | undefined> =>
    rec && deps.settleBoot(rec);

  return {
    register(req) {
      const { id } = req;
      return table.serialized(id, async () => {
        // A new container is the common case: an id this gateway does not remember goes straight
        // to a create, which KV refuses when a record exists; only then is the record read (the
        // stopped record of a restart, or a redundant registration).
        // A record of an earlier boot is a stopped container by now (boot-settle.ts).
        const remembered = table.remembered(id);
        if (remembered) return registerOver(req, await thisBoot(remembered));
        try {
          return await registerOver(req, undefined);
        } catch (err) {
          if (!isSysboxError(err, 'already-exists')) throw err;
          // Removed between the create and this read: a new container after all.
          return registerOver(req, await thisBoot(await table.get(id)));
        }
      });
    },

    update(req) {
      const { id } = req;
      return withRecord(id, `can't update container ${id}; not found in container table`, async (rec) => {
        const { record, chownedUpper } = updatePlan(rec, req);
        await netns.onUpdate(record, req.netns);
        const upperDir = chownedUpper
          ? await host.overlayUpperDir(record.rootfs).catch(() => undefined)
          : undefined;
        if (chownedUpper && !upperDir)
          log.warn({ id, rootfs: record.rootfs }, 'rootfs is on overlayfs but its upper dir was not found');
        await exec.step(record, [!!upperDir && recordUpperChown(record, upperDir)], {
          changed: true,
        });
      });
    },

    unregister({ id }) {
      return withRecord(id, `can't unregister container ${id}; not found in container table`, async (rec) => {
        const plan = unregisterPlan(rec);
        let next = await exec.run(rec, [plan.unmark]);
        if (plan.lookupClone) {
          const clone = await existingClone(exec, id).catch(() => undefined);
          if (clone) next = adoptClone(next, clone);
        }
        next = await exec.run(next, plan.undo);
        await netns
          .untrack(id, plan.untrackNetns)
          .catch((err: unknown) => log.warn({ id, err }, 'netns untrack failed'));
        next = stoppedRecord(next);
        // The removal watch starts with this write (table.ts), whatever the steps below answer.
        await exec.save(next, rec.state);
        const after = afterStop(next);
        if (after.syncOut) {
          const failed = await volumes.syncOut(next, 'Unregister');
          if (failed.length > 0) log.warn({ id, failed }, 'sync-out failed for some volumes');
        }
        if (after.notice) await exec.run(next, [after.notice]);
        log.info({ id, watch: next.rmWatchPath }, 'unregistered container');
      });
    },

    subidAlloc({ id, size }) {
      return withRecord(id, notRegistered(id), async (rec) => {
        // Kept across restarts: a restarted container gets its earlier range back.
        if (rec.subidAllocated) return firstMapping(rec, 'subid allocation');
        // No intent record and no write: the allocator keeps the range under the container's id
        // before it answers and answers the same range for the same id, so removal frees it by id
        // whatever the record says, a retry after a lost reply is safe, and the table holds it
        // for the record's next write (table.ts).
        const range = await exec.call(id, 'subid allocation', subidAlloc, { id, size });
        await deps.checks.subids(id, range);
        table.holdSubidRange(id, range);
        return firstMapping(withSubidRange(rec, range), 'subid allocation');
      });
    },

    prepMounts(req) {
      return withRecord(req.id, notRegistered(req.id), async (rec) => {
        // Only asked where it counts (the check reads the filesystem of each source).
        const idMappable = config.overlayfsOnIDMapMountOk
          ? await Promise.all(
              req.prepList.map((s) => host.idMapMountSupportedOnPath(s.source).catch(() => false)),
            )
          : [];
        const plan = prepPlan(rec, req, idMappable, config);
        if (!plan) return;
        if (plan.intent !== rec) await exec.save(plan.intent);
        await exec.run(plan.intent, [plan.prep]);
      });
    },

    reqMounts(req) {
      return withRecord(req.id, notRegistered(req.id), async (rec) => {
        const plan = reqMountsPlan(rec, req, config);
        if (plan.kind === 'answer') return plan.mounts;
        await exec.save(plan.intent);
        const made: OciMount[] = [];
        let next = plan.intent;
        try {
          await volumes.create(plan.intent, plan.creates, made);
        } finally {
          next = mountsAfter(plan.intent, made, facts);
          await exec.save(next);
        }
        noteAutoRemove(req.id);
        return mountsAnswer(next, config);
      });
    },

    reqShiftfsMark({ id, shiftfsMarks }) {
      return withRecord(id, notRegistered(id), async (rec) => {
        const plan = markPlan(rec, shiftfsMarks);
        if (plan.kind === 'answer') return plan.marks;
        await exec.save(plan.intent);
        return (await exec.step(plan.intent, [plan.mark], { changed: true })).shiftfsMarks;
      });
    },

    async reqFsState({ id, rootfs }) {
      await table.mustGet(id, notRegistered(id));
      if (facts.linuxHeaderMounts.length === 0) return [];
      return fsStatePlan(facts, await host.distroOf(rootfs));
    },

    pause({ id }) {
      return withRecord(id, `can't pause container ${id}; not found in container table`, async (rec) => {
        const next = await exec.step(rec, pauseCalls(rec));
        const failed = await volumes.syncOut(next, 'Pause');
        if (failed.length > 0)
          throw new SysboxError(
            'internal',
            `container ${id}: sync-out for volume backing ${failed.join(', ')} failed`,
          );
      });
    },

    resume({ id }) {
      return withRecord(id, `can't resume container ${id}; not found in container table`, async (rec) => {
        await exec.step(rec, resumeCalls(rec));
      });
    },

    cloneRootfs({ id }) {
      return withRecord(id, notRegistered(id), async (rec) => {
        const plan = clonePlan(rec);
        if (plan.kind === 'answer') return plan.rootfs;
        await exec.save(plan.intent);
        let next: ContainerRecord;
        try {
          next = await exec.run(plan.intent, [plan.create]);
        } catch (err) {
          // An earlier ReqCloneRootfs whose reply was lost (this gateway died) made it already.
          const clone =
            isSysboxError(err, 'already-exists') && plan.adoptable
              ? await existingClone(exec, id)
              : undefined;
          if (!clone) throw err;
          log.info(
            { id, rootfs: clone.rootfs },
            'adopted a clone made by an earlier, unanswered ReqCloneRootfs',
          );
          next = adoptClone(plan.intent, clone);
        }
        await exec.save(next);
        return next.rootfs;
      });
    },

    chownClonedRootfs({ id, uidOffset, gidOffset }) {
      return withRecord(id, notRegistered(id), async () => {
        await exec.call(
          id,
          'clone chown',
          rootfsChownClone,
          { id, uidOffset, gidOffset },
          'ChownClonedRootfs',
        );
      });
    },

    revertClonedRootfsChown({ id }) {
      return withRecord(id, notRegistered(id), async () => {
        await exec.call(
          id,
          'revert of the clone chown',
          rootfsRevertChown,
          { id },
          'RevertClonedRootfsChown',
        );
      });
    },
  };
}
