/** codec.ts against protobufjs (through proto-loader, as the server used it): same table, same bytes, same objects. */
import { describe, expect, it } from 'vitest';
import { MESSAGES, RPCS, decode, encode, sysboxMgrServiceDefinition, type MessageName } from './codec.js';
import { SERVICE_NAME, loadPackage } from './proto.js';

const pkg = loadPackage();
const TYPES: Record<string, string> = {
  TYPE_STRING: 'string',
  TYPE_BOOL: 'bool',
  TYPE_UINT32: 'uint32',
  TYPE_INT32: 'int32',
  TYPE_UINT64: 'uint64',
};
type Svc = Record<
  string,
  {
    requestSerialize(v: object): Buffer;
    requestDeserialize(b: Buffer): object;
    responseSerialize(v: object): Buffer;
    responseDeserialize(b: Buffer): object;
  }
>;
const theirs = pkg[SERVICE_NAME] as unknown as Svc;

/** Requests and replies with every field set, some to their zero value, plus empty ones. */
const mapping = (n: number) => ({ containerID: n, hostID: 100000 + n, size: 65536 });
const SAMPLES: Record<MessageName, object[]> = {
  IDMapping: [mapping(0)],
  RegisterReq: [
    {
      id: 'c1',
      rootfs: '/var/lib/docker/overlay2/x/merged',
      userns: '',
      netns: '/proc/1/ns/net',
      uidMappings: [mapping(0)],
      gidMappings: [mapping(0), mapping(1)],
    },
    { id: 'ünïcødé ✓' },
    {},
  ],
  ContainerConfig: [],
  RegisterResp: [
    {
      containerConfig: {
        aliasDns: true,
        ShiftfsOk: false,
        ShiftfsOnOverlayfsOk: false,
        IDMapMountOk: true,
        OverlayfsOnIDMapMountOk: true,
        noRootfsCloning: false,
        ignoreSysfsChown: false,
        allowTrustedXattr: false,
        honorCaps: false,
        syscontMode: true,
        userns: '',
        uidMappings: [mapping(0)],
        gidMappings: [],
        fsuidMapFailOnErr: false,
        rootfsUidShiftType: 3,
        noShiftfsOnFuse: false,
        relaxedReadOnly: true,
      },
    },
    { containerConfig: {} },
    {},
  ],
  UpdateReq: [
    {
      id: 'c1',
      userns: '/proc/2/ns/user',
      netns: '',
      uidMappings: [mapping(5)],
      gidMappings: [],
      rootfsUidShiftType: 2,
    },
  ],
  UpdateResp: [{}],
  UnregisterReq: [{ id: 'c1' }],
  UnregisterResp: [{}],
  SubidAllocReq: [
    { id: 'c1', size: 65536 },
    { id: 'c1', size: 2 ** 40 + 7 },
    { id: 'c1', size: 0 },
  ],
  SubidAllocResp: [
    { uid: 165536, gid: 165536 },
    { uid: 0, gid: 4294967295 },
  ],
  MountPrepInfo: [],
  MountPrepReq: [
    {
      id: 'c1',
      uid: 1,
      gid: 2,
      prepList: [
        { source: '/a', exclusive: true },
        { source: '/b', exclusive: false },
      ],
    },
  ],
  MountPrepResp: [{}],
  MountReqInfo: [],
  MountReq: [
    {
      id: 'c1',
      rootfsUidShiftType: 1,
      reqList: [
        { kind: 0, dest: '/var/lib/docker' },
        { kind: 4, dest: '/x' },
      ],
    },
  ],
  Mount: [],
  MountResp: [
    {
      mounts: [
        { source: '/s', dest: '/d', type: 'bind', opt: ['rbind', 'rprivate'] },
        { source: '', dest: '/e', type: 'tmpfs', opt: [] },
      ],
    },
    { mounts: [] },
  ],
  ShiftfsMark: [],
  ShiftfsMarkReq: [{ id: 'c1', shiftfsMarks: [{ source: '/lib/modules', readonly: true }] }],
  ShiftfsMarkResp: [{ shiftfsMarks: [{ source: '/lib/modules', readonly: false }] }],
  FsStateReq: [{ id: 'c1', rootfs: '/r' }],
  FsEntry: [],
  FsStateResp: [{ fsEntries: [{ kind: 1, path: 'dev/kmsg', mode: 0o644, dst: '' }] }],
  PauseReq: [{ id: 'c1' }],
  PauseResp: [{}],
  ResumeReq: [{ id: 'c1' }],
  ResumeResp: [{}],
  CloneRootfsReq: [{ id: 'c1' }],
  CloneRootfsResp: [{ rootfs: '/var/lib/sysbox/rootfs/c1/overlay2/merged' }],
  ChownClonedRootfsReq: [
    { id: 'c1', uidOffset: 165536, gidOffset: -165536 },
    { id: 'c1', uidOffset: 0, gidOffset: 0 },
  ],
  ChownClonedRootfsResp: [{}],
  RevertClonedRootfsChownReq: [{ id: 'c1' }],
  RevertClonedRootfsChownResp: [{}],
};

describe('codec.ts', () => {
  it('has the .proto: every message, field name, number, type and label', () => {
    const ours = Object.keys(pkg).filter((k) => k.startsWith('protobuf.') && k !== SERVICE_NAME);
    expect(ours.map((k) => k.slice('protobuf.'.length)).sort()).toEqual(Object.keys(MESSAGES).sort());
    for (const key of ours) {
      const def = pkg[key] as unknown as {
        type: { field: { name: string; number: number; type: string; label: string; typeName: string }[] };
      };
      const fields = def.type.field.map((f) => [
        f.name,
        f.number,
        f.type === 'TYPE_MESSAGE' ? f.typeName : TYPES[f.type],
        ...(f.label === 'LABEL_REPEATED' ? ['repeated'] : []),
      ]);
      expect(fields, key).toEqual(MESSAGES[key.slice('protobuf.'.length) as MessageName]);
    }
  });

  it('serves the 13 rpcs at their paths, unary', () => {
    const ours = sysboxMgrServiceDefinition();
    expect(Object.keys(ours)).toEqual(Object.keys(theirs));
    for (const [rpc, m] of Object.entries(ours)) {
      expect(m.path).toBe((theirs[rpc] as unknown as { path: string }).path);
      expect([m.requestStream, m.responseStream]).toEqual([false, false]);
    }
  });

  it.each(Object.entries(RPCS))(
    '%s: the bytes protobufjs writes and the objects proto-loader reads',
    (rpc, [req, resp]) => {
      const ours = sysboxMgrServiceDefinition()[rpc]!;
      const their = theirs[rpc]!;
      expect(SAMPLES[req].length + SAMPLES[resp].length).toBeGreaterThan(1);
      for (const sample of SAMPLES[req]) {
        const bytes = their.requestSerialize(sample);
        expect(ours.requestSerialize(sample)).toEqual(bytes);
        expect(ours.requestDeserialize(bytes)).toStrictEqual(their.requestDeserialize(bytes));
      }
      for (const sample of SAMPLES[resp]) {
        const bytes = their.responseSerialize(sample);
        expect(ours.responseSerialize(sample)).toEqual(bytes);
        expect(ours.responseDeserialize(bytes)).toStrictEqual(their.responseDeserialize(bytes));
      }
    },
  );

  it('skips unknown fields of every wire type, as protobufjs does', () => {
    const known = encode('UnregisterReq', { id: 'c1' });
    // field 9 varint (10 bytes), 10 fixed64, 11 bytes, 12 a group holding a varint, 13 fixed32
    const unknown = Buffer.from([
      0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5a, 2,
      0xaa, 0xbb, 0x63, 0x08, 0x01, 0x64, 0x6d, 1, 2, 3, 4,
    ]);
    const bytes = Buffer.concat([unknown, known]);
    expect(decode('UnregisterReq', bytes)).toStrictEqual(theirs.Unregister!.requestDeserialize(bytes));
  });

  it('refuses truncated input, as protobufjs does', () => {
    const bytes = encode('RegisterReq', { id: 'c1', rootfs: '/r' }).subarray(0, 5);
    expect(() => theirs.Register!.requestDeserialize(bytes)).toThrow(RangeError);
    expect(() => decode('RegisterReq', bytes)).toThrow(RangeError);
  });
});
