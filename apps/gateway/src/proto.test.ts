import { describe, expect, it } from 'vitest';
import { loadPackage } from './proto.js';

/**
 * Every message's fields as upstream's sysboxMgrProtobuf.proto (nestybox/sysbox-ipc) declares them:
 * [name, number, type, repeated]. sysbox-runc breaks if any of these drift.
 */
const UPSTREAM: Record<string, [string, number, string, boolean][]> = {
  IDMapping: [
    ['containerID', 1, 'TYPE_UINT32', false],
    ['hostID', 2, 'TYPE_UINT32', false],
    ['size', 3, 'TYPE_UINT32', false],
  ],
  RegisterReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['rootfs', 2, 'TYPE_STRING', false],
    ['userns', 3, 'TYPE_STRING', false],
    ['netns', 4, 'TYPE_STRING', false],
    ['uidMappings', 5, 'TYPE_MESSAGE', true],
    ['gidMappings', 6, 'TYPE_MESSAGE', true],
  ],
  ContainerConfig: [
    ['aliasDns', 1, 'TYPE_BOOL', false],
    ['ShiftfsOk', 2, 'TYPE_BOOL', false],
    ['ShiftfsOnOverlayfsOk', 3, 'TYPE_BOOL', false],
    ['IDMapMountOk', 4, 'TYPE_BOOL', false],
    ['OverlayfsOnIDMapMountOk', 5, 'TYPE_BOOL', false],
    ['noRootfsCloning', 6, 'TYPE_BOOL', false],
    ['ignoreSysfsChown', 7, 'TYPE_BOOL', false],
    ['allowTrustedXattr', 8, 'TYPE_BOOL', false],
    ['honorCaps', 9, 'TYPE_BOOL', false],
    ['syscontMode', 10, 'TYPE_BOOL', false],
    ['userns', 11, 'TYPE_STRING', false],
    ['uidMappings', 12, 'TYPE_MESSAGE', true],
    ['gidMappings', 13, 'TYPE_MESSAGE', true],
    ['fsuidMapFailOnErr', 14, 'TYPE_BOOL', false],
    ['rootfsUidShiftType', 15, 'TYPE_UINT32', false],
    ['noShiftfsOnFuse', 16, 'TYPE_BOOL', false],
    ['relaxedReadOnly', 17, 'TYPE_BOOL', false],
  ],
  RegisterResp: [['containerConfig', 1, 'TYPE_MESSAGE', false]],
  UpdateReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['userns', 2, 'TYPE_STRING', false],
    ['netns', 3, 'TYPE_STRING', false],
    ['uidMappings', 4, 'TYPE_MESSAGE', true],
    ['gidMappings', 5, 'TYPE_MESSAGE', true],
    ['rootfsUidShiftType', 6, 'TYPE_UINT32', false],
  ],
  UpdateResp: [],
  UnregisterReq: [['id', 1, 'TYPE_STRING', false]],
  UnregisterResp: [],
  SubidAllocReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['size', 2, 'TYPE_UINT64', false],
  ],
  SubidAllocResp: [
    ['uid', 1, 'TYPE_UINT32', false],
    ['gid', 2, 'TYPE_UINT32', false],
  ],
  MountPrepInfo: [
    ['source', 1, 'TYPE_STRING', false],
    ['exclusive', 2, 'TYPE_BOOL', false],
  ],
  MountPrepReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['uid', 2, 'TYPE_UINT32', false],
    ['gid', 3, 'TYPE_UINT32', false],
    ['prepList', 4, 'TYPE_MESSAGE', true],
  ],
  MountPrepResp: [],
  MountReqInfo: [
    ['kind', 1, 'TYPE_UINT32', false],
    ['dest', 2, 'TYPE_STRING', false],
  ],
  MountReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['rootfsUidShiftType', 2, 'TYPE_UINT32', false],
    ['reqList', 3, 'TYPE_MESSAGE', true],
  ],
  Mount: [
    ['source', 1, 'TYPE_STRING', false],
    ['dest', 2, 'TYPE_STRING', false],
    ['type', 3, 'TYPE_STRING', false],
    ['opt', 4, 'TYPE_STRING', true],
  ],
  MountResp: [['mounts', 1, 'TYPE_MESSAGE', true]],
  ShiftfsMark: [
    ['source', 1, 'TYPE_STRING', false],
    ['readonly', 2, 'TYPE_BOOL', false],
  ],
  ShiftfsMarkReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['shiftfsMarks', 2, 'TYPE_MESSAGE', true],
  ],
  ShiftfsMarkResp: [['shiftfsMarks', 1, 'TYPE_MESSAGE', true]],
  FsStateReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['rootfs', 2, 'TYPE_STRING', false],
  ],
  FsEntry: [
    ['kind', 1, 'TYPE_UINT32', false],
    ['path', 2, 'TYPE_STRING', false],
    ['mode', 3, 'TYPE_UINT32', false],
    ['dst', 4, 'TYPE_STRING', false],
  ],
  FsStateResp: [['fsEntries', 1, 'TYPE_MESSAGE', true]],
  PauseReq: [['id', 1, 'TYPE_STRING', false]],
  PauseResp: [],
  ResumeReq: [['id', 1, 'TYPE_STRING', false]],
  ResumeResp: [],
  CloneRootfsReq: [['id', 1, 'TYPE_STRING', false]],
  CloneRootfsResp: [['rootfs', 1, 'TYPE_STRING', false]],
  ChownClonedRootfsReq: [
    ['id', 1, 'TYPE_STRING', false],
    ['uidOffset', 2, 'TYPE_INT32', false],
    ['gidOffset', 3, 'TYPE_INT32', false],
  ],
  ChownClonedRootfsResp: [],
  RevertClonedRootfsChownReq: [['id', 1, 'TYPE_STRING', false]],
  RevertClonedRootfsChownResp: [],
};

/** rpc name → [request, response] as upstream declares them. */
const UPSTREAM_RPCS: Record<string, [string, string]> = {
  Register: ['RegisterReq', 'RegisterResp'],
  Update: ['UpdateReq', 'UpdateResp'],
  Unregister: ['UnregisterReq', 'UnregisterResp'],
  SubidAlloc: ['SubidAllocReq', 'SubidAllocResp'],
  PrepMounts: ['MountPrepReq', 'MountPrepResp'],
  ReqMounts: ['MountReq', 'MountResp'],
  ReqShiftfsMark: ['ShiftfsMarkReq', 'ShiftfsMarkResp'],
  ReqFsState: ['FsStateReq', 'FsStateResp'],
  Pause: ['PauseReq', 'PauseResp'],
  Resume: ['ResumeReq', 'ResumeResp'],
  ReqCloneRootfs: ['CloneRootfsReq', 'CloneRootfsResp'],
  ChownClonedRootfs: ['ChownClonedRootfsReq', 'ChownClonedRootfsResp'],
  RevertClonedRootfsChown: ['RevertClonedRootfsChownReq', 'RevertClonedRootfsChownResp'],
};

interface FieldDescriptor {
  name: string;
  number: number;
  type: string;
  label: string;
  typeName?: string;
}

describe('proto/sysboxMgr.proto matches upstream sysbox-ipc', () => {
  const pkg = loadPackage();
  const ours = Object.keys(pkg)
    .filter((k) => k.startsWith('protobuf.') && k !== 'protobuf.sysboxMgrStateChannel')
    .map((k) => k.slice('protobuf.'.length))
    .sort();

  it('declares exactly the upstream messages', () => {
    expect(ours).toEqual(Object.keys(UPSTREAM).sort());
  });

  it.each(Object.entries(UPSTREAM))('%s: every field name, number, type and label', (name, fields) => {
    const def = pkg[`protobuf.${name}`] as unknown as { type: { field: FieldDescriptor[] } };
    const got = def.type.field.map((f) => [f.name, f.number, f.type, f.label === 'LABEL_REPEATED']);
    expect(got).toEqual(fields);
  });

  it('nested message fields name upstream types', () => {
    const def = pkg['protobuf.ContainerConfig'] as unknown as { type: { field: FieldDescriptor[] } };
    expect(def.type.field.find((f) => f.name === 'uidMappings')?.typeName).toBe('IDMapping');
  });

  it('serves the 13 upstream rpcs with their request and response types', () => {
    const svc = pkg['protobuf.sysboxMgrStateChannel'] as unknown as Record<
      string,
      {
        path: string;
        requestType: { type: { name: string } };
        responseType: { type: { name: string } };
        requestStream: boolean;
      }
    >;
    const got = Object.fromEntries(
      Object.entries(svc).map(([rpc, m]) => [rpc, [m.requestType.type.name, m.responseType.type.name]]),
    );
    expect(got).toEqual(UPSTREAM_RPCS);
    for (const [rpc, m] of Object.entries(svc)) {
      expect(m.path).toBe(`/protobuf.sysboxMgrStateChannel/${rpc}`);
      expect(m.requestStream).toBe(false);
    }
  });
});
