import { z } from 'zod';
import { ContainerId, Empty, HostPath, Offset, NextCursor, PageRequest, Timestamp } from './common.js';
import { defineContract, subjectOf, type ServiceContract } from './contract.js';

const ById = z.object({ id: ContainerId });

export const rootfsCreateClone = defineContract({
  service: 'rootfs',
  endpoint: 'create-clone',
  idempotent: true,
  subject: subjectOf('rootfs', 'create-clone'),
  description: 'clone an overlayfs rootfs onto a metacopy overlay and stack it over the original',
  request: z.object({ id: ContainerId, origRootfs: HostPath }),
  reply: z.object({
    /** The clone's merged dir. */
    rootfs: HostPath,
    /** The original overlay's workdir: it disappears when the runtime removes the container. */
    origWorkDir: HostPath,
  }),
  errors: ['invalid-request', 'already-exists', 'unsupported', 'internal'],
});

export const rootfsRemoveClone = defineContract({
  service: 'rootfs',
  endpoint: 'remove-clone',
  idempotent: true,
  subject: subjectOf('rootfs', 'remove-clone'),
  description: 'unmount and remove a clone and what it stacked on the original rootfs',
  request: ById,
  reply: Empty,
  errors: ['invalid-request', 'not-found', 'internal'],
});

export const rootfsChownClone = defineContract({
  service: 'rootfs',
  endpoint: 'chown-clone',
  idempotent: true,
  subject: subjectOf('rootfs', 'chown-clone'),
  description: 'shift the ownership of a clone by an offset',
  request: z.object({ id: ContainerId, uidOffset: Offset, gidOffset: Offset }),
  reply: Empty,
  errors: ['invalid-request', 'not-found', 'failed-precondition', 'internal', 'timeout'],
});

export const rootfsRevertChown = defineContract({
  service: 'rootfs',
  endpoint: 'revert-chown',
  idempotent: true,
  subject: subjectOf('rootfs', 'revert-chown'),
  description: "undo a clone's chown",
  request: ById,
  reply: Empty,
  errors: ['invalid-request', 'not-found', 'internal', 'timeout'],
});

export const rootfsContainerStopped = defineContract({
  service: 'rootfs',
  endpoint: 'container-stopped',
  idempotent: true,
  subject: subjectOf('rootfs', 'container-stopped'),
  description: 'note that the runtime stopped the container (and removed the bind-to-self mount)',
  request: ById,
  reply: Empty,
  errors: ['invalid-request', 'not-found'],
});

export const rootfsRemoveAll = defineContract({
  service: 'rootfs',
  endpoint: 'remove-all',
  idempotent: true,
  subject: subjectOf('rootfs', 'remove-all'),
  description: 'remove every clone of this node, best effort',
  request: Empty,
  reply: z.object({
    removed: z.array(ContainerId),
    failures: z.array(z.object({ id: ContainerId, error: z.string() })),
  }),
  errors: [],
});

export const rootfsShiftUpper = defineContract({
  service: 'rootfs',
  endpoint: 'shift-upper',
  idempotent: true,
  subject: subjectOf('rootfs', 'shift-upper'),
  description: "chown an ID-mapped overlay rootfs's upper dir by an offset while the container runs",
  request: z.object({
    id: ContainerId,
    upperDir: HostPath,
    uidOffset: Offset,
    gidOffset: Offset,
    /**
     * sysbox-runc chowns the upper dir itself when it sets up an ID-mapped rootfs: then the
     * shift is only recorded, so revert-upper (stop, pause) knows what to undo.
     */
    alreadyShifted: z.boolean().default(false),
  }),
  reply: Empty,
  errors: ['invalid-request', 'already-exists', 'internal', 'timeout'],
});

export const rootfsRevertUpper = defineContract({
  service: 'rootfs',
  endpoint: 'revert-upper',
  idempotent: true,
  subject: subjectOf('rootfs', 'revert-upper'),
  description: 'undo shift-upper; a no-op when the upper dir is not shifted',
  request: ById,
  reply: Empty,
  errors: ['invalid-request', 'internal', 'timeout'],
});

export const CloneInfo = z.object({
  id: ContainerId,
  origRootfs: HostPath,
  cloneRootfs: HostPath,
  origWorkDir: HostPath,
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  chowned: z.boolean(),
  containerStopped: z.boolean(),
  mounted: z.boolean(),
  createdAt: Timestamp,
});

export const UpperShiftInfo = z.object({
  id: ContainerId,
  upperDir: HostPath,
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  shifted: z.boolean(),
});

export const rootfsList = defineContract({
  service: 'rootfs',
  endpoint: 'list',
  readOnly: true,
  subject: subjectOf('rootfs', 'list'),
  description: 'the clones and upper-dir shifts of this node, a page at a time',
  request: z.object({ ...PageRequest }).strict(),
  reply: z.object({ clones: z.array(CloneInfo), uppers: z.array(UpperShiftInfo), next: NextCursor }),
  errors: [],
});

/** Counts only: clones and upper-dir shifts, from the stores' keys (no record read). */
export const rootfsSummary = defineContract({
  service: 'rootfs',
  endpoint: 'summary',
  readOnly: true,
  subject: subjectOf('rootfs', 'summary'),
  description: 'how many rootfs clones and upper-dir shifts this node holds (counts)',
  request: Empty,
  reply: z.object({ clones: z.number().int().min(0), uppers: z.number().int().min(0) }),
  errors: ['invalid-request'],
});

export const rootfsService = {
  service: 'rootfs',
  name: 'sysbox-rootfs',
  bucket: 'sysbox-rootfs',
  description: 'overlayfs metacopy clones of container rootfs, chown and revert',
  contracts: [
    rootfsCreateClone,
    rootfsRemoveClone,
    rootfsChownClone,
    rootfsRevertChown,
    rootfsContainerStopped,
    rootfsRemoveAll,
    rootfsShiftUpper,
    rootfsRevertUpper,
    rootfsList,
    rootfsSummary,
  ],
} as const satisfies ServiceContract;

export type CloneInfo = z.infer<typeof CloneInfo>;

/** The seed interface (upstream intf.RootfsCloner). */
export interface RootfsCloner {
  createClone(id: string, origRootfs: string): Promise<z.infer<typeof rootfsCreateClone.reply>>;
  removeClone(id: string): Promise<void>;
  chownClone(id: string, uidOffset: number, gidOffset: number): Promise<void>;
  revertChown(id: string): Promise<void>;
  containerStopped(id: string): Promise<void>;
  removeAll(): Promise<z.infer<typeof rootfsRemoveAll.reply>>;
}
