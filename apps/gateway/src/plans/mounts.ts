/**
 * ReqMounts as a decision, every rule of it in this file: a restarted container gets the mounts it
 * had; otherwise one inner-store volume per requested kind (vol-mgr), owned as the rootfs's
 * ID-shift type says, its kind recorded before it is asked for (so a crash in between still
 * leaves removal a volume to destroy), with no time limit (rpc-limits.ts), adopted when an earlier
 * unanswered ReqMounts made it; the answer is the volumes' mounts, the host's kernel-header and
 * module mounts, and binfmt_misc where it is namespaced. PrepMounts too (the sources vol-mgr
 * chowns for the container). Pure; volumes.ts runs the creates, manager.ts the rest.
 */
import { posix } from 'node:path';
import {
  SysboxError,
  VOLUME_LAYOUT,
  volPrep,
  type OciMount,
  type VolCreateRequest,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import type { MgrConfig } from '../container-config.js';
import type { HostFacts } from '../probes.js';
import { ShiftType, firstMapping, type ContainerRecord } from '../record.js';
import { RPC_TIME_LIMITS } from '../rpc-limits.js';
import { planCall, type PlanCall } from '../executor.js';
import type { PrepMountsInput, ReqMountsInput } from '../wire.js';

export const BINFMT_MISC_MOUNT: OciMount = {
  destination: '/proc/sys/fs/binfmt_misc',
  source: 'binfmt_misc',
  type: 'binfmt_misc',
  options: ['noexec', 'nosuid', 'nodev'],
};

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

/** One volume to create, in request order. */
export interface VolumeCreate {
  kind: VolumeKind;
  dest: string;
  request: VolCreateRequest;
  /** An earlier, unanswered ReqMounts recorded this kind: an already-exists may be its volume. */
  adoptable: boolean;
  /** A second request of a kind: fails at its turn, as its second create did upstream. */
  duplicate?: SysboxError;
}

export type ReqMountsPlan =
  /** Nothing to create: the answer. */
  | { kind: 'answer'; mounts: OciMount[] }
  /** `intent` is written first, then the creates run; `mountsAfter` is written even when one fails. */
  | { kind: 'create'; intent: ContainerRecord; creates: VolumeCreate[] };

export function reqMountsPlan(
  rec: ContainerRecord,
  req: ReqMountsInput,
  config: Pick<MgrConfig, 'mountBinfmtMisc'>,
): ReqMountsPlan {
  // A restarted container gets the mounts it had (its volumes kept their contents).
  if (rec.state === 'restarted') return { kind: 'answer', mounts: mountsAnswer(rec, config) };
  const { id } = rec;
  const { owner, chownOnSync } = volumeOwnership(rec, req.rootfsUidShiftType);
  // Kinds recorded by an earlier ReqMounts that never answered (the gateway died while vol-mgr
  // was creating): their volume may exist although this record has no mount for it.
  const unanswered = new Set(rec.volumeKinds.filter((k) => !hasVolumeMount(rec, k)));
  const intent = {
    ...rec,
    volumeKinds: [...new Set([...rec.volumeKinds, ...req.reqList.map((r) => r.kind)])],
  };
  const seen = new Set<VolumeKind>();
  const creates = req.reqList.map(({ kind, dest }): VolumeCreate => {
    // vol-mgr answers an identical create the same (for callers whose answer was lost), so a
    // duplicate kind is caught here.
    const duplicate = seen.has(kind)
      ? new SysboxError(
          'already-exists',
          `container ${id}: a ${kind} volume was already requested (for ${dest} too)`,
        )
      : undefined;
    seen.add(kind);
    const request: VolCreateRequest = {
      id,
      rootfs: rec.rootfs,
      mountpoint: dest,
      uid: owner.uid,
      gid: owner.gid,
      chownOnSync,
      perm: VOLUME_LAYOUT[kind].perm,
      timeLimit: RPC_TIME_LIMITS.ReqMounts,
    };
    return { kind, dest, request, adoptable: unanswered.has(kind), ...(duplicate && { duplicate }) };
  });
  return { kind: 'create', intent, creates };
}

/** The record once the volumes answered: the mounts made, then the host's kernel-header and module mounts. */
export function mountsAfter(
  rec: ContainerRecord,
  made: OciMount[],
  facts: Pick<HostFacts, 'linuxHeaderMounts' | 'libModMounts'>,
): ContainerRecord {
  return { ...rec, containerMounts: [...made, ...facts.linuxHeaderMounts, ...facts.libModMounts] };
}

/** What ReqMounts answers: the record's mounts, and binfmt_misc where it is namespaced. */
export function mountsAnswer(rec: ContainerRecord, config: Pick<MgrConfig, 'mountBinfmtMisc'>): OciMount[] {
  return [...rec.containerMounts, ...(config.mountBinfmtMisc ? [BINFMT_MISC_MOUNT] : [])];
}

/**
 * PrepMounts: the sources that cannot be ID-mapped (`idMappable[i]` says, per request entry, and
 * only counts where overlayfs on ID-mapped mounts works) are chowned by vol-mgr for the container;
 * the prep is recorded before asking (revert-prep of a container vol-mgr holds nothing for
 * reverts nothing). Undefined: nothing to prepare.
 */
export function prepPlan(
  rec: ContainerRecord,
  req: PrepMountsInput,
  idMappable: readonly boolean[],
  config: Pick<MgrConfig, 'overlayfsOnIDMapMountOk'>,
): { intent: ContainerRecord; prep: PlanCall } | undefined {
  const sources = req.prepList.filter((_, i) => !(config.overlayfsOnIDMapMountOk && idMappable[i]));
  if (sources.length === 0) return undefined;
  return {
    intent: rec.mountsPrepped ? rec : { ...rec, mountsPrepped: true },
    prep: planCall(
      'mount source preparation',
      volPrep,
      { id: rec.id, uid: req.uid, gid: req.gid, sources },
      { bound: 'PrepMounts' },
    ),
  };
}
