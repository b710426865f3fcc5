import { z } from 'zod';
import { ContainerId, Empty, HostPath, NextCursor, PageRequest, Timestamp } from './common.js';
import { defineContract, subjectOf, type ServiceContract } from './contract.js';

export const ShiftfsMount = z.object({ source: HostPath, readonly: z.boolean() });
export type ShiftfsMount = z.infer<typeof ShiftfsMount>;

export const shiftfsMark = defineContract({
  service: 'shiftfs',
  endpoint: 'mark',
  idempotent: true,
  subject: subjectOf('shiftfs', 'mark'),
  description: 'mark host paths with shiftfs for a container; answers the markpoints in request order',
  request: z.object({
    id: ContainerId,
    mounts: z.array(ShiftfsMount).max(1024),
    createMarkpoint: z.boolean(),
  }),
  reply: z.object({ mounts: z.array(ShiftfsMount) }),
  errors: ['invalid-request', 'unsupported', 'unavailable', 'internal'],
});

export const shiftfsUnmark = defineContract({
  service: 'shiftfs',
  endpoint: 'unmark',
  idempotent: true,
  subject: subjectOf('shiftfs', 'unmark'),
  description: "drop a container's hold on markpoints; the last holder unmounts",
  request: z.object({ id: ContainerId, mounts: z.array(ShiftfsMount).max(1024) }),
  reply: Empty,
  errors: ['invalid-request', 'unavailable', 'internal'],
});

export const shiftfsUnmarkAll = defineContract({
  service: 'shiftfs',
  endpoint: 'unmark-all',
  idempotent: true,
  subject: subjectOf('shiftfs', 'unmark-all'),
  description: 'unmount every mark of this node, best effort',
  request: Empty,
  reply: z.object({
    unmarked: z.array(HostPath),
    failures: z.array(z.object({ markpoint: HostPath, error: z.string() })),
  }),
  errors: [],
});

/** mounting: claimed, mount in progress; mounted: in use; unmounting: last holder left, teardown in progress. */
export const MarkState = z.enum(['mounting', 'mounted', 'unmounting']);
export type MarkState = z.infer<typeof MarkState>;

export const MarkInfo = z.object({
  source: HostPath,
  markpoint: HostPath,
  createdMarkpoint: z.boolean(),
  holders: z.array(ContainerId),
  state: MarkState,
  markedAt: Timestamp,
});
export type MarkInfo = z.infer<typeof MarkInfo>;

export const shiftfsList = defineContract({
  service: 'shiftfs',
  endpoint: 'list',
  readOnly: true,
  subject: subjectOf('shiftfs', 'list'),
  description:
    'the marks of this node with their holders, a page at a time, and whether shiftfs works here (on overlayfs too)',
  request: z.object({ ...PageRequest }).strict(),
  reply: z.object({
    /** shiftfs works here: tried at start (or in the kernel, with --disable-shiftfs-precheck). */
    supported: z.boolean(),
    // The fields below are optional because shiftfs-mgr 0.1 did not send them.
    /** shiftfs marks on overlayfs (a container's rootfs) work too; absent means not known, read as no. */
    supportedOnOverlayfs: z.boolean().optional(),
    /** The kernel lists shiftfs (after modprobe): marks are made; absent means as `supported`. */
    inKernel: z.boolean().optional(),
    /** Why `supported` is what it is, as shiftfs-mgr logged it at start. */
    reason: z.string().optional(),
    /** Why `supportedOnOverlayfs` is what it is. */
    reasonOnOverlayfs: z.string().optional(),
    marks: z.array(MarkInfo),
    next: NextCursor,
  }),
  errors: [],
});

/** Counts only: the marks of this node (from the store's keys, no record read) and shiftfs support. */
export const shiftfsSummary = defineContract({
  service: 'shiftfs',
  endpoint: 'summary',
  readOnly: true,
  subject: subjectOf('shiftfs', 'summary'),
  description: 'how many shiftfs marks this node holds, and whether shiftfs works here (counts)',
  request: Empty,
  reply: z.object({
    supported: z.boolean(),
    supportedOnOverlayfs: z.boolean(),
    marks: z.number().int().min(0),
  }),
  errors: ['invalid-request'],
});

export const shiftfsService = {
  service: 'shiftfs',
  name: 'sysbox-shiftfs',
  bucket: 'sysbox-shiftfs',
  description: 'reference-counted shiftfs marks on host paths',
  contracts: [shiftfsMark, shiftfsUnmark, shiftfsUnmarkAll, shiftfsList, shiftfsSummary],
} as const satisfies ServiceContract;

export type ShiftfsMarkRequest = z.infer<typeof shiftfsMark.request>;

/** The seed interface (upstream intf.ShiftfsMgr). */
export interface ShiftfsMgr {
  mark(id: string, mounts: ShiftfsMount[], createMarkpoint: boolean): Promise<ShiftfsMount[]>;
  unmark(id: string, mounts: ShiftfsMount[]): Promise<void>;
  unmarkAll(): Promise<z.infer<typeof shiftfsUnmarkAll.reply>>;
}
