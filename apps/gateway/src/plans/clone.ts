/**
 * ReqCloneRootfs and ReqShiftfsMark as decisions: the intent written before asking, the call, and
 * the record its reply makes. Pure; manager.ts runs them (executor.ts).
 */
import { posix } from 'node:path';
import { rootfsCreateClone, shiftfsMark, type ShiftfsMount } from '@sysbox-mgr-ts/contracts';
import { planCall, type PlanCall } from '../executor.js';
import type { ContainerRecord } from '../record.js';

export interface CloneReply {
  rootfs: string;
  origWorkDir: string;
}

/** The record once the clone is there: its rootfs is the clone, watched at the original's workdir. */
export function adoptClone(rec: ContainerRecord, clone: CloneReply): ContainerRecord {
  return {
    ...rec,
    rootfs: clone.rootfs,
    rootfsCloned: true,
    requested: { ...rec.requested, clone: false },
    // The runtime cannot remove a rootfs the clone is stacked on; the original overlay's
    // workdir is what disappears when the container is removed.
    rmWatchPath: posix.join(clone.origWorkDir, 'work'),
  };
}

export type ClonePlan =
  | { kind: 'answer'; rootfs: string }
  | {
      kind: 'clone';
      /** Written before asking (requested.clone), so a lost reply still leaves removal a clone to remove. */
      intent: ContainerRecord;
      create: PlanCall;
      /** An earlier ReqCloneRootfs whose reply was lost asked already: an already-exists is its clone. */
      adoptable: boolean;
    };

export function clonePlan(rec: ContainerRecord): ClonePlan {
  if (rec.rootfsCloned) return { kind: 'answer', rootfs: rec.rootfs };
  return {
    kind: 'clone',
    intent: { ...rec, requested: { ...rec.requested, clone: true } },
    create: planCall(
      'rootfs clone',
      rootfsCreateClone,
      { id: rec.id, origRootfs: rec.rootfs },
      { bound: 'ReqCloneRootfs', apply: adoptClone },
    ),
    adoptable: rec.requested.clone,
  };
}

export type MarkPlan =
  { kind: 'answer'; marks: ShiftfsMount[] } | { kind: 'mark'; intent: ContainerRecord; mark: PlanCall };

/** shiftfs marks once per container: asked for (the intent written first), then the answer recorded. */
export function markPlan(rec: ContainerRecord, marks: ShiftfsMount[]): MarkPlan {
  if (rec.shiftfsMarks.length > 0) return { kind: 'answer', marks: rec.shiftfsMarks };
  return {
    kind: 'mark',
    intent: { ...rec, requested: { ...rec.requested, shiftfs: marks } },
    mark: planCall(
      'shiftfs mark',
      shiftfsMark,
      { id: rec.id, mounts: marks, createMarkpoint: true },
      {
        apply: (r, reply: { mounts: ShiftfsMount[] }) => ({
          ...r,
          shiftfsMarks: reply.mounts,
          requested: { ...r.requested, shiftfs: [] },
        }),
      },
    ),
  };
}
