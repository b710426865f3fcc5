/**
 * The gRPC edge: each RPC's request, as proto-loader hands it over, parsed by one zod schema into
 * the manager's typed input (field names as our domain spells them), and each reply mapped back
 * to the .proto's names. A request that does not parse is an `invalid-request` naming the
 * container, the field and its value, before anything reads or changes the table.
 */
import { z } from 'zod';
import {
  ContainerId,
  ContainerPath,
  HostPath,
  IdMapping,
  SysboxError,
  VOLUME_KINDS,
  type OciMount,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';

/** IDMapping as the .proto spells it, checked field by field with the contract's rules. */
const WireIdMapping = z
  .object({
    containerID: IdMapping.shape.containerId,
    hostID: IdMapping.shape.hostId,
    size: IdMapping.shape.size,
  })
  .transform((m): IdMapping => ({ containerId: m.containerID, hostId: m.hostID, size: m.size }));
export type WireIdMapping = z.input<typeof WireIdMapping>;

const Mappings = z.array(WireIdMapping).default([]);

/** A namespace path: empty (none given) or a host path. */
const NsPath = z.string().superRefine((p, ctx) => {
  if (p === '') return;
  for (const issue of HostPath.safeParse(p).error?.issues ?? [])
    ctx.addIssue({ code: 'custom', message: issue.message });
});

const MountKind = z
  .number()
  .refine((k) => VOLUME_KINDS[k] !== undefined, `invalid mount request kind (0..${VOLUME_KINDS.length - 1})`)
  .transform((k): VolumeKind => VOLUME_KINDS[k]!);

/** A rootfs ID-shift type as sysbox-runc sends it; which ones a call accepts is the call's rule. */
const ShiftTypeNumber = z.number().int().min(0);

const IdOnly = z.object({ id: ContainerId });

/** One schema per RPC: the wire request in, the manager's input out. */
export const REQUESTS = {
  Register: z.object({
    id: ContainerId,
    rootfs: HostPath,
    userns: NsPath,
    netns: NsPath,
    uidMappings: Mappings,
    gidMappings: Mappings,
  }),
  Update: z.object({
    id: ContainerId,
    userns: NsPath,
    netns: NsPath,
    uidMappings: Mappings,
    gidMappings: Mappings,
    rootfsUidShiftType: ShiftTypeNumber,
  }),
  Unregister: IdOnly,
  SubidAlloc: z.object({ id: ContainerId, size: z.coerce.number() }),
  PrepMounts: z.object({
    id: ContainerId,
    uid: z.number(),
    gid: z.number(),
    prepList: z.array(z.object({ source: HostPath, exclusive: z.boolean() })).default([]),
  }),
  ReqMounts: z.object({
    id: ContainerId,
    rootfsUidShiftType: ShiftTypeNumber,
    reqList: z.array(z.object({ kind: MountKind, dest: ContainerPath })).default([]),
  }),
  ReqShiftfsMark: z.object({
    id: ContainerId,
    shiftfsMarks: z.array(z.object({ source: HostPath, readonly: z.boolean() })).default([]),
  }),
  ReqFsState: z.object({ id: ContainerId, rootfs: HostPath }),
  Pause: IdOnly,
  Resume: IdOnly,
  ReqCloneRootfs: IdOnly,
  ChownClonedRootfs: z.object({ id: ContainerId, uidOffset: z.number(), gidOffset: z.number() }),
  RevertClonedRootfsChown: IdOnly,
} as const;

export type RpcName = keyof typeof REQUESTS;
export type InputOf<K extends RpcName> = z.output<(typeof REQUESTS)[K]>;
export type RegisterInput = InputOf<'Register'>;
export type UpdateInput = InputOf<'Update'>;
export type SubidAllocInput = InputOf<'SubidAlloc'>;
export type PrepMountsInput = InputOf<'PrepMounts'>;
export type ReqMountsInput = InputOf<'ReqMounts'>;
export type ReqShiftfsMarkInput = InputOf<'ReqShiftfsMark'>;
export type ReqFsStateInput = InputOf<'ReqFsState'>;
export type ChownClonedRootfsInput = InputOf<'ChownClonedRootfs'>;
/** Unregister, Pause, Resume, ReqCloneRootfs, RevertClonedRootfsChown. */
export type IdInput = InputOf<'Unregister'>;

/** A request refused at the edge: `field` is a path like `reqList[0].dest`, `value` what came in it. */
export class InvalidRequestError extends SysboxError {
  constructor(
    readonly field: string,
    readonly value: unknown,
    message: string,
  ) {
    super('invalid-request', message);
  }
}

/** A value as an error message shows it: JSON, cut at `max` characters. */
function shown(value: unknown, max = 200): string {
  if (typeof value === 'string') return JSON.stringify(value.slice(0, max));
  return (JSON.stringify(value) ?? String(value)).slice(0, max);
}

function fieldName(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`))
    .join('');
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const p of path)
    v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** A container id from anywhere outside (a request, a service's list): runc's `^[\w+.-]+$`, at most 128. */
export function parseContainerId(id: unknown): string {
  const r = ContainerId.safeParse(id);
  if (!r.success) {
    throw new InvalidRequestError(
      'id',
      id,
      `container id ${JSON.stringify(String(id).slice(0, 160))}: ${r.error.issues.map((i) => i.message).join('; ')}`,
    );
  }
  return r.data;
}

/**
 * The manager's input for one RPC. The id is checked first (every message names the container);
 * a refused field answers `container <id>: <field> <value>: <why>`, one clause per bad field.
 */
export function parseRequest<K extends RpcName>(rpc: K, raw: unknown): InputOf<K> {
  const req = (raw ?? {}) as Record<string, unknown>;
  const id = parseContainerId(req.id);
  const r = REQUESTS[rpc].safeParse(req);
  if (r.success) return r.data as InputOf<K>;
  const fields = new Map<string, { value: unknown; why: string[] }>();
  for (const issue of r.error.issues) {
    const field = fieldName(issue.path);
    const f = fields.get(field) ?? { value: valueAt(req, issue.path), why: [] };
    f.why.push(issue.message);
    fields.set(field, f);
  }
  const [field, first] = [...fields][0]!;
  const clauses = [...fields].map(([name, f]) => `${name} ${shown(f.value)}: ${f.why.join('; ')}`);
  throw new InvalidRequestError(field, first.value, `container ${id}: ${clauses.join('; ')}`);
}

/** The wire's ContainerConfig, field names as the .proto spells them (mappings in domain form). */
export interface ContainerConfig {
  aliasDns: boolean;
  ShiftfsOk: boolean;
  ShiftfsOnOverlayfsOk: boolean;
  IDMapMountOk: boolean;
  OverlayfsOnIDMapMountOk: boolean;
  noRootfsCloning: boolean;
  ignoreSysfsChown: boolean;
  allowTrustedXattr: boolean;
  honorCaps: boolean;
  syscontMode: boolean;
  userns: string;
  uidMappings: IdMapping[];
  gidMappings: IdMapping[];
  fsuidMapFailOnErr: boolean;
  rootfsUidShiftType: number;
  noShiftfsOnFuse: boolean;
  relaxedReadOnly: boolean;
}

export const mappingsToWire = (list: IdMapping[]): WireIdMapping[] =>
  list.map((m) => ({ containerID: m.containerId, hostID: m.hostId, size: m.size }));

export const containerConfigToWire = (cfg: ContainerConfig) => ({
  ...cfg,
  uidMappings: mappingsToWire(cfg.uidMappings),
  gidMappings: mappingsToWire(cfg.gidMappings),
});

export const mountToWire = (m: OciMount) => ({
  source: m.source,
  dest: m.destination,
  type: m.type,
  opt: m.options,
});
