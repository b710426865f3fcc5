/**
 * Inner-store volumes (upstream's volume managers, now vol-mgr): who owns a new volume by the
 * rootfs's ID-shift type, kinds recorded before creating, adoption of a volume an unanswered
 * ReqMounts made, and sync-out retried once when vol-mgr died in the middle of a copy.
 */
import { posix } from 'node:path';
import {
  SysboxError,
  VOLUME_LAYOUT,
  isSysboxError,
  volByKind,
  volList,
  type OciMount,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import { allPages, type Logger } from '@sysbox-mgr-ts/service-kit';
import type { HostFacts } from './probes.js';
import { ShiftType, firstMapping, type ContainerRecord } from './record.js';
import type { ReplyChecks } from './reply-checks.js';
import { RPC_TIME_LIMITS } from './rpc-limits.js';
import type { ServiceCall } from './service-call.js';
import type { ContainerTable } from './table.js';

export interface VolumeOwnership {
  owner: { uid: number; gid: number };
  /** vol-mgr chowns the volume by the container's offset when syncing it out and in. */
  chownOnSync: boolean;
}

/**
 * Rootfs ID-shift   volume owner     chown on sync
 * ID-mapped         root:root        no
 * shiftfs, chown    host uid:gid     yes
 * no-shift          host uid:gid     no
 * other             `invalid-request`
 */
export function volumeOwnership(rec: ContainerRecord, rootfsUidShiftType: number): VolumeOwnership {
  switch (rootfsUidShiftType) {
    case ShiftType.IDMappedMount:
      return { owner: { uid: 0, gid: 0 }, chownOnSync: false };
    case ShiftType.Shiftfs:
    case ShiftType.Chown:
      return { owner: firstMapping(rec, 'volume ownership'), chownOnSync: true };
    case ShiftType.NoShift:
      return { owner: firstMapping(rec, 'volume ownership'), chownOnSync: false };
    default:
      throw new SysboxError(
        'invalid-request',
        `container ${rec.id}: unexpected rootfs ID shift type ${rootfsUidShiftType}`,
      );
  }
}

/** Whether the record holds the mount of its `kind` volume (vol-mgr's `<data root>/<hostDir>/<id>`). */
export function hasVolumeMount(rec: ContainerRecord, kind: VolumeKind): boolean {
  return rec.containerMounts.some(
    (m) =>
      posix.basename(m.source) === rec.id &&
      posix.basename(posix.dirname(m.source)) === VOLUME_LAYOUT[kind].hostDir,
  );
}

/** A vol-mgr killed in the middle of a copy never answers; one more try reaches its successor. */
export const SYNC_OUT_ATTEMPTS = 2;

export interface VolumePolicy {
  /**
   * Creates a volume per request with the ownership of `rootfsUidShiftType`, adopting one an
   * earlier unanswered call made, and saves the record's mounts (those made, plus the host's
   * kernel-header and module mounts) even when one fails.
   */
  create(
    rec: ContainerRecord,
    rootfsUidShiftType: number,
    requests: { kind: VolumeKind; dest: string }[],
  ): Promise<void>;
  /** Syncs every volume out to its host dir (unless inner-image preload is off); answers the kinds that failed. */
  /** `rpc`: the call it serves, whose time limit bounds each sync-out (rpc-limits.ts). */
  syncOut(rec: ContainerRecord, rpc: 'Unregister' | 'Pause'): Promise<VolumeKind[]>;
}

export function createVolumePolicy(deps: {
  call: ServiceCall;
  table: Pick<ContainerTable, 'save'>;
  checks: Pick<ReplyChecks, 'volumeMounts'>;
  facts: Pick<HostFacts, 'linuxHeaderMounts' | 'libModMounts'>;
  noInnerImgPreload: boolean;
  log: Logger;
}): VolumePolicy {
  const { call, table, checks, facts, log } = deps;

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
    async create(rec, rootfsUidShiftType, requests) {
      const { id } = rec;
      const { owner, chownOnSync } = volumeOwnership(rec, rootfsUidShiftType);
      // Kinds recorded by an earlier ReqMounts that never answered (the gateway died while
      // vol-mgr was creating): their volume may exist although this record has no mount for it.
      const unanswered = new Set(rec.volumeKinds.filter((k) => !hasVolumeMount(rec, k)));
      // Recorded before creating, so a crash in between still leaves removal a volume to destroy
      // (destroy of one that was never made answers not-found, which removal takes as done).
      rec.volumeKinds = [...new Set([...rec.volumeKinds, ...requests.map((r) => r.kind)])];
      await table.save(rec);
      const mounts: OciMount[] = [];
      const made = new Set<VolumeKind>();
      try {
        for (const { kind, dest } of requests) {
          // One volume per kind and container, as upstream: a second request of a kind fails as
          // its second create did there (vol-mgr answers an identical create the same, for
          // callers whose answer was lost, so the duplicate is caught here).
          if (made.has(kind))
            throw new SysboxError(
              'already-exists',
              `container ${id}: a ${kind} volume was already requested (for ${dest} too)`,
            );
          made.add(kind);
          const create = {
            id,
            rootfs: rec.rootfs,
            mountpoint: dest,
            uid: owner.uid,
            gid: owner.gid,
            chownOnSync,
            perm: VOLUME_LAYOUT[kind].perm,
            timeLimit: RPC_TIME_LIMITS.ReqMounts,
          };
          try {
            const created = await call(
              id,
              `failed to setup mounts backing ${dest}`,
              volByKind[kind].create,
              create,
              'ReqMounts',
            );
            mounts.push(...checks.volumeMounts(id, kind, created.mounts));
          } catch (err) {
            const adopted =
              isSysboxError(err, 'already-exists') && unanswered.has(kind)
                ? await adopt(rec, kind, dest)
                : undefined;
            if (!adopted) throw err;
            mounts.push(adopted);
          }
        }
      } finally {
        rec.containerMounts = [...mounts, ...facts.linuxHeaderMounts, ...facts.libModMounts];
        await table.save(rec);
      }
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
