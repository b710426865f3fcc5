/**
 * Inner-store volumes (upstream's volume managers, now vol-mgr), the calls: the creates a
 * ReqMounts plan decided (plans/mounts.ts), adoption of a volume an unanswered ReqMounts made, and
 * sync-out retried once when vol-mgr died in the middle of a copy. No table write: the manager
 * saves what these answer.
 */
import { isSysboxError, volByKind, volList, type OciMount, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { allPages, type Logger } from '@sysbox-mgr-ts/service-kit';
import type { VolumeCreate } from './plans/mounts.js';
import type { ContainerRecord } from './record.js';
import type { ReplyChecks } from './reply-checks.js';
import { RPC_TIME_LIMITS } from './rpc-limits.js';
import type { ServiceCall } from './service-call.js';

/** A vol-mgr killed in the middle of a copy never answers; one more try reaches its successor. */
export const SYNC_OUT_ATTEMPTS = 2;

export interface VolumePolicy {
  /**
   * Runs a ReqMounts plan's creates at once, adopting a volume an earlier unanswered call made;
   * the mounts made are pushed onto `made` in request order, also when one create fails, so the
   * caller saves them. A kind asked twice is refused before anything is created.
   */
  create(rec: ContainerRecord, creates: readonly VolumeCreate[], made: OciMount[]): Promise<void>;
  /** Syncs every volume out to its host dir (unless inner-image preload is off); answers the kinds that failed. */
  /** `rpc`: the call it serves, whose time limit bounds each sync-out (rpc-limits.ts). */
  syncOut(rec: ContainerRecord, rpc: 'Unregister' | 'Pause'): Promise<VolumeKind[]>;
}

export function createVolumePolicy(deps: {
  call: ServiceCall;
  checks: Pick<ReplyChecks, 'volumeMounts'>;
  noInnerImgPreload: boolean;
  log: Logger;
}): VolumePolicy {
  const { call, checks, log } = deps;

  /**
   * The mount of a volume an earlier, unanswered ReqMounts made: vol-mgr lists it ready with the
   * same mountpoint. Undefined when it is not there as asked (then already-exists stands).
   */
  async function adopt(rec: ContainerRecord, kind: VolumeKind, dest: string): Promise<OciMount | undefined> {
    const pages = await allPages((cursor) =>
      call(rec.id, `listing the ${kind} volume`, volList, { kind, cursor }),
    );
    const vol = pages.flatMap((p) => p.volumes).find((v) => v.id === rec.id && v.mountpoint === dest);
    if (!vol) return undefined;
    const [mount] = checks.volumeMounts(rec.id, kind, [
      { source: vol.path, destination: dest, type: 'bind', options: ['rbind', 'rprivate'] },
    ]);
    log.info(
      { id: rec.id, kind, path: vol.path },
      'adopted a volume created by an earlier, unanswered ReqMounts',
    );
    return mount;
  }

  return {
    async create(rec, creates, made) {
      const { id } = rec;
      const duplicate = creates.find((c) => c.duplicate)?.duplicate;
      if (duplicate) throw duplicate;
      const createOne = async ({ kind, dest, request, adoptable }: VolumeCreate): Promise<OciMount[]> => {
        try {
          const created = await call(
            id,
            `failed to setup mounts backing ${dest}`,
            volByKind[kind].create,
            request,
            'ReqMounts',
          );
          return checks.volumeMounts(id, kind, created.mounts);
        } catch (err) {
          const adopted =
            isSysboxError(err, 'already-exists') && adoptable ? await adopt(rec, kind, dest) : undefined;
          if (!adopted) throw err;
          return [adopted];
        }
      };
      // Each kind's volume is a dir of its own, synced in from the rootfs, which the copies only
      // read: they run at once, and the container waits for the longest copy, not for their sum.
      // Every create is waited for, so no copy is still running when the caller saves the record.
      const results = await Promise.allSettled(creates.map(createOne));
      for (const r of results) if (r.status === 'fulfilled') made.push(...r.value);
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    },

    async syncOut(rec, rpc) {
      if (deps.noInnerImgPreload) return [];
      const failed: VolumeKind[] = [];
      for (const kind of rec.volumeKinds) {
        // A vol-mgr killed in the middle of the copy never answers: the call times out. One more
        // try reaches its restarted instance (or a replica), which copies the whole volume again.
        for (let attempt = 1; ; attempt++) {
          try {
            await call(
              rec.id,
              `sync-out of the ${kind} volume`,
              volByKind[kind].syncOut,
              { id: rec.id, timeLimit: RPC_TIME_LIMITS[rpc] },
              rpc,
            );
            break;
          } catch (err) {
            const retry =
              attempt < SYNC_OUT_ATTEMPTS &&
              (isSysboxError(err, 'timeout') || isSysboxError(err, 'unavailable'));
            log.warn(
              { id: rec.id, kind, err, attempt },
              retry ? 'volume sync-out failed; retrying' : 'volume sync-out failed',
            );
            if (retry) continue;
            failed.push(kind);
            break;
          }
        }
      }
      return failed;
    },
  };
}
