import { z } from 'zod';
import {
  ContainerId,
  ContainerPath,
  Empty,
  FileMode,
  HostPath,
  Id,
  OciMount,
  NextCursor,
  PageRequest,
  TimeLimit,
  Timestamp,
} from './common.js';
import { defineContract, subjectOf, type ServiceContract } from './contract.js';

/** The inner stores upstream backs with host volumes, in sysbox-runc's MntKind order (0..6). */
export const VOLUME_KINDS = ['docker', 'kubelet', 'k0s', 'k3s', 'rke2', 'buildkit', 'containerd'] as const;
export type VolumeKind = (typeof VOLUME_KINDS)[number];
export const VolumeKindSchema = z.enum(VOLUME_KINDS);

/** Host dir (under the data root) and default permissions of each kind, as upstream lays them out. */
export const VOLUME_LAYOUT: Record<VolumeKind, { hostDir: string; perm: number; mountpoint: string }> = {
  docker: { hostDir: 'docker', perm: 0o700, mountpoint: '/var/lib/docker' },
  kubelet: { hostDir: 'kubelet', perm: 0o755, mountpoint: '/var/lib/kubelet' },
  k0s: { hostDir: 'k0s', perm: 0o755, mountpoint: '/var/lib/k0s' },
  k3s: { hostDir: 'rancher-k3s', perm: 0o755, mountpoint: '/var/lib/rancher/k3s' },
  rke2: { hostDir: 'rancher-rke2', perm: 0o755, mountpoint: '/var/lib/rancher/rke2' },
  buildkit: { hostDir: 'buildkit', perm: 0o755, mountpoint: '/var/lib/buildkit' },
  containerd: {
    hostDir: 'containerd',
    perm: 0o700,
    mountpoint: '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs',
  },
};

const VolumeFailure = z.object({ kind: VolumeKindSchema, id: ContainerId, error: z.string() });

function volContracts(kind: VolumeKind) {
  return {
    create: defineContract({
      service: 'vol',
      endpoint: `${kind}-create`,
      idempotent: true,
      subject: subjectOf('vol', kind, 'create'),
      description: `make a ${kind} volume for a container, sync the rootfs content in, answer its bind mount`,
      request: z.object({
        id: ContainerId,
        rootfs: HostPath,
        mountpoint: ContainerPath,
        uid: Id,
        gid: Id,
        chownOnSync: z.boolean(),
        perm: FileMode.optional(),
        /** Bound of the sync-in (absent: the service's --sync-timeout-ms). */
        timeLimit: TimeLimit.optional(),
      }),
      reply: z.object({ mounts: z.array(OciMount) }),
      errors: ['invalid-request', 'already-exists', 'internal', 'timeout'],
    }),
    destroy: defineContract({
      service: 'vol',
      endpoint: `${kind}-destroy`,
      idempotent: true,
      subject: subjectOf('vol', kind, 'destroy'),
      description: `remove a container's ${kind} volume`,
      request: z.object({ id: ContainerId }),
      reply: Empty,
      errors: ['invalid-request', 'not-found', 'internal'],
    }),
    syncOut: defineContract({
      service: 'vol',
      endpoint: `${kind}-sync-out`,
      idempotent: true,
      subject: subjectOf('vol', kind, 'sync-out'),
      description: `copy a container's ${kind} volume back into its rootfs`,
      /** timeLimit: bound of the copy (absent: the service's --sync-timeout-ms). */
      request: z.object({ id: ContainerId, timeLimit: TimeLimit.optional() }),
      reply: Empty,
      errors: ['invalid-request', 'not-found', 'internal', 'timeout'],
    }),
    syncOutAndDestroyAll: defineContract({
      service: 'vol',
      endpoint: `${kind}-sync-out-and-destroy-all`,
      idempotent: true,
      subject: subjectOf('vol', kind, 'sync-out-and-destroy-all'),
      description: `sync out and remove every ${kind} volume of this node`,
      request: Empty,
      reply: z.object({ destroyed: z.array(ContainerId), failures: z.array(VolumeFailure) }),
      errors: ['internal'],
    }),
  };
}

export const volByKind: Record<VolumeKind, ReturnType<typeof volContracts>> = {
  docker: volContracts('docker'),
  kubelet: volContracts('kubelet'),
  k0s: volContracts('k0s'),
  k3s: volContracts('k3s'),
  rke2: volContracts('rke2'),
  buildkit: volContracts('buildkit'),
  containerd: volContracts('containerd'),
};

export const PrepSource = z.object({ source: HostPath, exclusive: z.boolean() });

export const volPrep = defineContract({
  service: 'vol',
  endpoint: 'prep',
  idempotent: true,
  subject: subjectOf('vol', 'prep'),
  description: "shift bind-mount sources to the container root's owner; remembered for revert-prep",
  request: z.object({ id: ContainerId, uid: Id, gid: Id, sources: z.array(PrepSource).max(1024) }),
  reply: z.object({ prepared: z.array(HostPath), skipped: z.array(HostPath) }),
  errors: ['invalid-request', 'not-found', 'internal', 'timeout'],
});

export const volRevertPrep = defineContract({
  service: 'vol',
  endpoint: 'revert-prep',
  idempotent: true,
  subject: subjectOf('vol', 'revert-prep'),
  description: 'undo exactly what prep did for a container',
  request: z.object({ id: ContainerId }),
  reply: z.object({ reverted: z.array(HostPath) }),
  errors: ['invalid-request', 'internal', 'timeout'],
});

export const VolumeInfo = z.object({
  kind: VolumeKindSchema,
  id: ContainerId,
  path: HostPath,
  mountpoint: ContainerPath,
  syncOutTarget: HostPath,
  uid: Id,
  gid: Id,
  chownOnSync: z.boolean(),
  sizeBytes: z.number().int().min(0),
  createdAt: Timestamp,
});
export type VolumeInfo = z.infer<typeof VolumeInfo>;

export const PrepInfo = z.object({
  id: ContainerId,
  source: HostPath,
  exclusive: z.boolean(),
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  holders: z.array(ContainerId),
});

export const volList = defineContract({
  service: 'vol',
  endpoint: 'list',
  readOnly: true,
  subject: subjectOf('vol', 'list'),
  description: 'the volumes and prepared mount sources of this node, a page at a time',
  request: z
    .object({
      kind: VolumeKindSchema.optional(),
      /**
       * false: no `du`, every sizeBytes 0 (an inventory that needs ids, not sizes: one `du` per
       * volume made a page of 2,000 take minutes). Absent or true: each volume of the page sized.
       */
      sizes: z.boolean().optional(),
      ...PageRequest,
    })
    .strict(),
  reply: z.object({ volumes: z.array(VolumeInfo), preps: z.array(PrepInfo), next: NextCursor }),
  errors: ['invalid-request'],
});

/** Counts only: volumes of each kind and prepared sources, from the stores' keys (no record read). */
export const volSummary = defineContract({
  service: 'vol',
  endpoint: 'summary',
  readOnly: true,
  subject: subjectOf('vol', 'summary'),
  description: 'how many volumes of each kind and prepared mount sources this node holds (counts)',
  request: Empty,
  reply: z.object({
    volumes: z.record(VolumeKindSchema, z.number().int().min(0)),
    preps: z.number().int().min(0),
  }),
  errors: ['invalid-request'],
});

export const volService = {
  service: 'vol',
  name: 'sysbox-vol',
  bucket: 'sysbox-vol',
  description:
    'inner-store volumes (docker, kubelet, k0s, k3s, rke2, buildkit, containerd) and mount-source preparation',
  contracts: [
    ...VOLUME_KINDS.flatMap((kind) => Object.values(volByKind[kind])),
    volPrep,
    volRevertPrep,
    volList,
    volSummary,
  ],
} as const satisfies ServiceContract;

export type VolCreateRequest = z.infer<(typeof volByKind)['docker']['create']['request']>;
export type VolCreateReply = z.infer<(typeof volByKind)['docker']['create']['reply']>;
export type VolPrepRequest = z.infer<typeof volPrep.request>;
export type VolListReply = z.infer<typeof volList.reply>;
export type VolSummaryReply = z.infer<typeof volSummary.reply>;

/** The seed interface (upstream intf.VolMgr), one instance per kind. */
export interface VolMgr {
  createVol(req: VolCreateRequest): Promise<VolCreateReply>;
  destroyVol(id: string): Promise<void>;
  syncOut(id: string): Promise<void>;
  syncOutAndDestroyAll(): Promise<z.infer<(typeof volByKind)['docker']['syncOutAndDestroyAll']['reply']>>;
}
