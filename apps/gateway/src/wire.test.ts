import { describe, expect, it } from 'vitest';
import {
  InvalidRequestError,
  REQUESTS,
  containerConfigToWire,
  mountToWire,
  parseContainerId,
  parseRequest,
  type RpcName,
} from './wire.js';

/** A valid wire request per RPC, as proto-loader hands it over (defaults filled in). */
const VALID: Record<RpcName, Record<string, unknown>> = {
  Register: {
    id: 'c1',
    rootfs: '/var/lib/docker/overlay2/c1/merged',
    userns: '',
    netns: '/proc/1/ns/net',
    uidMappings: [],
    gidMappings: [],
  },
  Update: { id: 'c1', userns: '', netns: '', uidMappings: [], gidMappings: [], rootfsUidShiftType: 4 },
  Unregister: { id: 'c1' },
  SubidAlloc: { id: 'c1', size: 65536 },
  PrepMounts: { id: 'c1', uid: 1, gid: 1, prepList: [{ source: '/data', exclusive: true }] },
  ReqMounts: { id: 'c1', rootfsUidShiftType: 4, reqList: [{ kind: 0, dest: '/var/lib/docker' }] },
  ReqShiftfsMark: { id: 'c1', shiftfsMarks: [{ source: '/lib/modules', readonly: true }] },
  ReqFsState: { id: 'c1', rootfs: '/r' },
  Pause: { id: 'c1' },
  Resume: { id: 'c1' },
  ReqCloneRootfs: { id: 'c1' },
  ChownClonedRootfs: { id: 'c1', uidOffset: 165536, gidOffset: 165536 },
  RevertClonedRootfsChown: { id: 'c1' },
};

function refusal(rpc: RpcName, req: unknown): InvalidRequestError {
  try {
    parseRequest(rpc, req);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err).toMatchObject({ code: 'invalid-request' });
    return err as InvalidRequestError;
  }
  throw new Error(`${rpc} accepted ${JSON.stringify(req)}`);
}

describe('wire requests', () => {
  it('has a schema for each of the 13 RPCs, and each accepts a valid request', () => {
    expect(Object.keys(REQUESTS)).toHaveLength(13);
    for (const rpc of Object.keys(VALID) as RpcName[])
      expect(() => parseRequest(rpc, VALID[rpc])).not.toThrow();
  });

  const HOSTILE_IDS = ['../etc', 'a/b', '', 'x'.repeat(129), 'a\nb', '..', '.', 'a b', undefined, 42];
  it.each(HOSTILE_IDS.map((id) => [JSON.stringify(id)?.slice(0, 20) ?? 'undefined', id]))(
    'refuses the hostile id %s in every RPC',
    (_, id) => {
      for (const rpc of Object.keys(VALID) as RpcName[]) {
        const e = refusal(rpc, { ...VALID[rpc], id });
        expect(e.field).toBe('id');
        expect(e.value).toBe(id);
        expect(e.message).toMatch(/^container id /);
      }
      expect(() => parseContainerId(id)).toThrow(InvalidRequestError);
    },
  );

  it('accepts the ids runc accepts, up to 128 characters', () => {
    for (const id of ['abc', 'a.b+c-d_e', 'x'.repeat(128), '9f86d081884c'])
      expect(parseContainerId(id)).toBe(id);
  });

  const BAD_FIELDS: [RpcName, Record<string, unknown>, string, unknown, RegExp][] = [
    ['Register', { rootfs: 'relative/rootfs' }, 'rootfs', 'relative/rootfs', /absolute and normalized/],
    ['Register', { rootfs: '/a/../etc' }, 'rootfs', '/a/../etc', /normalized/],
    ['Register', { netns: '/proc/../etc' }, 'netns', '/proc/../etc', /normalized/],
    ['Register', { userns: 'user' }, 'userns', 'user', /absolute/],
    ['Register', { uidMappings: [{ containerID: 0, hostID: 1, size: 0 }] }, 'uidMappings[0].size', 0, /.+/],
    [
      'Update',
      { gidMappings: [{ containerID: -1, hostID: 1, size: 1 }] },
      'gidMappings[0].containerID',
      -1,
      /.+/,
    ],
    [
      'PrepMounts',
      {
        prepList: [
          { source: '/ok', exclusive: false },
          { source: '/a/../b', exclusive: false },
        ],
      },
      'prepList[1].source',
      '/a/../b',
      /normalized/,
    ],
    [
      'ReqMounts',
      { reqList: [{ kind: 7, dest: '/x' }] },
      'reqList[0].kind',
      7,
      /invalid mount request kind \(0\.\.6\)/,
    ],
    ['ReqMounts', { reqList: [{ kind: 1.5, dest: '/x' }] }, 'reqList[0].kind', 1.5, /kind/],
    [
      'ReqMounts',
      { reqList: [{ kind: 0, dest: 'var/lib/docker' }] },
      'reqList[0].dest',
      'var/lib/docker',
      /must be absolute/,
    ],
    [
      'ReqMounts',
      { reqList: [{ kind: 0, dest: '/var/../../etc' }] },
      'reqList[0].dest',
      '/var/../../etc',
      /climbs above the container root/,
    ],
    ['ReqMounts', { reqList: [{ kind: 0, dest: '/a\0b' }] }, 'reqList[0].dest', '/a\0b', /NUL/],
    [
      'ReqShiftfsMark',
      { shiftfsMarks: [{ source: '/x/', readonly: true }] },
      'shiftfsMarks[0].source',
      '/x/',
      /normalized/,
    ],
    ['ReqFsState', { rootfs: '' }, 'rootfs', '', /empty/],
  ];
  it.each(BAD_FIELDS)('%s refuses %j, naming the field and its value', (rpc, patch, field, value, why) => {
    const e = refusal(rpc, { ...VALID[rpc], ...patch });
    expect(e.field).toBe(field);
    expect(e.value).toEqual(value);
    expect(e.message).toMatch(
      new RegExp(
        `^container c1: ${field.replace(/[[\].]/g, '\\$&')} ${JSON.stringify(value)?.replace(/[[\].\\/*+?()]/g, '\\$&')}: `,
      ),
    );
    expect(e.message).toMatch(why);
  });

  it('names every bad field, not only the first', () => {
    const e = refusal('Register', { ...VALID.Register, rootfs: 'r', netns: 'n' });
    expect(e.field).toBe('rootfs');
    expect(e.message).toMatch(/rootfs "r": .*; netns "n": /);
  });

  it('turns the wire into domain input: mappings renamed, kinds named, paths normalized', () => {
    const reg = parseRequest('Register', {
      ...VALID.Register,
      uidMappings: [{ containerID: 0, hostID: 300000, size: 65536 }],
      extra: 1,
    });
    expect(reg.uidMappings).toEqual([{ containerId: 0, hostId: 300000, size: 65536 }]);
    expect(reg).not.toHaveProperty('extra');
    const mounts = parseRequest('ReqMounts', {
      ...VALID.ReqMounts,
      reqList: [{ kind: 6, dest: '//var/lib//containerd/.' }],
    });
    expect(mounts.reqList).toEqual([{ kind: 'containerd', dest: '/var/lib/containerd' }]);
    expect(parseRequest('ReqMounts', { id: 'c1', rootfsUidShiftType: 0 }).reqList).toEqual([]);
  });

  it('maps replies back to the .proto names', () => {
    const m = [{ containerId: 0, hostId: 165536, size: 65536 }];
    expect(containerConfigToWire({ userns: '', uidMappings: m, gidMappings: [] } as never)).toMatchObject({
      uidMappings: [{ containerID: 0, hostID: 165536, size: 65536 }],
      gidMappings: [],
    });
    expect(mountToWire({ source: '/s', destination: '/d', type: 'bind', options: ['ro'] })).toEqual({
      source: '/s',
      dest: '/d',
      type: 'bind',
      opt: ['ro'],
    });
  });
});
