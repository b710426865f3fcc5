/**
 * Scenario 6: bad input through the gateway socket. Unknown ids, hostile ids and paths, empty and
 * enormous fields: each gets a clean gRPC status, the gateway keeps serving, and nothing on the
 * host changes outside the data root (the temp etc/ dir sits exactly where `../../etc` from a
 * volume host dir would land).
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { mountsBelow, servicesState, tree, until } from './runtime.js';

const reg = (id: string, rootfs: string) => ({
  id,
  rootfs,
  userns: '',
  netns: '',
  uidMappings: [],
  gidMappings: [],
});

/** Every rpc that takes a container id, with an otherwise sensible request. */
const callsWithId = (id: string, rootfs: string): [string, object][] => [
  ['Register', reg(id, rootfs)],
  ['Update', { id, rootfsUidShiftType: 4 }],
  ['Unregister', { id }],
  ['SubidAlloc', { id, size: 65536 }],
  ['PrepMounts', { id, uid: 165536, gid: 165536, prepList: [{ source: rootfs, exclusive: true }] }],
  ['ReqMounts', { id, rootfsUidShiftType: 4, reqList: [{ kind: 0, dest: '/var/lib/docker' }] }],
  ['ReqShiftfsMark', { id, shiftfsMarks: [{ source: rootfs, readonly: false }] }],
  ['ReqFsState', { id, rootfs }],
  ['Pause', { id }],
  ['Resume', { id }],
  ['ReqCloneRootfs', { id }],
  ['ChownClonedRootfs', { id, uidOffset: 165536, gidOffset: 165536 }],
  ['RevertClonedRootfsChown', { id }],
];

describe('bad input through the gateway', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let hostBefore: string[];
  let rootfs: string;

  /** The temp root except the data root and the logs: what must never change. */
  const outsideDataRoot = async () =>
    (await tree(sys.dir)).filter(
      (l) => !l.startsWith('data') && !l.startsWith('logs') && !l.startsWith('run'),
    );

  beforeAll(async () => {
    sys = await startSystem({ args: { gateway: ['--disable-ovfs-on-idmapped-mount'] } });
    client = connectGateway(sys.socket);
    rootfs = join(sys.dir, 'rootfs');
    await mkdir(join(rootfs, 'var', 'lib', 'docker'), { recursive: true });
    hostBefore = await outsideDataRoot();
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  it('an unknown container is NOT_FOUND on every rpc but Register, naming it', async () => {
    showLogs();
    for (const [method, req] of callsWithId('nosuch', rootfs).slice(1)) {
      const s = await statusOf(rpc(client, method, req));
      expect({ method, code: s?.code }).toEqual({ method, code: status.NOT_FOUND });
      expect(s!.details).toContain('nosuch');
    }
  });

  it('hostile, empty and over-long ids are INVALID_ARGUMENT on every rpc', async () => {
    showLogs();
    for (const id of ['../../etc', '..', 'a/b', '', 'x'.repeat(129), 'a\nb', 'a b', '\u0000']) {
      for (const [method, req] of callsWithId(id, rootfs)) {
        const s = await statusOf(rpc(client, method, req));
        expect({ method, id, code: s?.code }).toEqual({ method, id, code: status.INVALID_ARGUMENT });
      }
    }
  });

  it('hostile paths, kinds and enormous fields of a registered container are refused cleanly', async () => {
    showLogs();
    const okRootfs = join(sys.dir, 'rootfs-ok');
    await mkdir(join(okRootfs, 'var', 'lib', 'docker'), { recursive: true });
    await rpc(client, 'Register', reg('ok', okRootfs));
    const big = 'y'.repeat(100_000);
    const cases: [string, object, number][] = [
      ['Register', reg('p1', '../../etc'), status.INVALID_ARGUMENT],
      ['Register', reg('p2', '/proc/../etc'), status.INVALID_ARGUMENT],
      ['Register', reg('p3', `/${big}`), status.INVALID_ARGUMENT],
      ['Register', reg('p4', ''), status.INVALID_ARGUMENT],
      ['Register', { ...reg('p5', rootfs), netns: `/proc/${big}` }, status.INVALID_ARGUMENT],
      [
        'ReqMounts',
        { id: 'ok', rootfsUidShiftType: 4, reqList: [{ kind: 99, dest: '/x' }] },
        status.INVALID_ARGUMENT,
      ],
      [
        'ReqMounts',
        { id: 'ok', rootfsUidShiftType: 4, reqList: [{ kind: 0, dest: '../../etc' }] },
        status.INVALID_ARGUMENT,
      ],
      ['ReqMounts', { id: 'ok', rootfsUidShiftType: 77, reqList: [] }, status.INVALID_ARGUMENT],
      [
        'PrepMounts',
        { id: 'ok', uid: 1, gid: 1, prepList: [{ source: '/a/../../etc', exclusive: true }] },
        status.INVALID_ARGUMENT,
      ],
      [
        'PrepMounts',
        { id: 'ok', uid: 1, gid: 1, prepList: [{ source: '', exclusive: true }] },
        status.INVALID_ARGUMENT,
      ],
      ['ReqFsState', { id: 'ok', rootfs: '../etc' }, status.INVALID_ARGUMENT],
      ['SubidAlloc', { id: 'ok', size: 0 }, status.INVALID_ARGUMENT],
      ['SubidAlloc', { id: 'ok', size: 2 ** 40 }, status.INVALID_ARGUMENT],
    ];
    for (const [method, req, code] of cases) {
      const s = await statusOf(rpc(client, method, req));
      expect({ method, req: JSON.stringify(req).slice(0, 120), code: s?.code }).toEqual({
        method,
        req: JSON.stringify(req).slice(0, 120),
        code,
      });
    }
    // Past gRPC's 4 MB message bound: refused by the transport, and the gateway carries on.
    const huge = await statusOf(rpc(client, 'Register', reg('h', `/${'z'.repeat(5 * 1024 * 1024)}`)));
    expect(huge?.code).toBe(status.RESOURCE_EXHAUSTED);
    const many = await statusOf(
      rpc(client, 'ReqMounts', {
        id: 'ok',
        rootfsUidShiftType: 4,
        reqList: Array.from({ length: 10_000 }, () => ({ kind: 0, dest: '/var/lib/docker' })),
      }),
    );
    expect(many?.code).toBe(status.FAILED_PRECONDITION); // no ids yet: refused before any volume
    await rpc(client, 'SubidAlloc', { id: 'ok', size: 65536 });
    const dup = await statusOf(
      rpc(client, 'ReqMounts', {
        id: 'ok',
        rootfsUidShiftType: 4,
        reqList: Array.from({ length: 10_000 }, () => ({ kind: 0, dest: '/var/lib/docker' })),
      }),
    );
    expect(dup?.code).toBe(status.ALREADY_EXISTS); // the first made the volume, the second is a duplicate
    await rpc(client, 'Unregister', { id: 'ok' });
    // The runtime removes it: whatever the duplicate request made is released.
    await rm(okRootfs, { recursive: true });
    await until(
      'release of ok',
      async () => (await statusOf(rpc(client, 'Pause', { id: 'ok' })))?.code === status.NOT_FOUND,
    );
    expect((await rpc(client, 'Register', reg('still-serving', rootfs))).containerConfig.syscontMode).toBe(
      true,
    );
    await rpc(client, 'Unregister', { id: 'still-serving' });
  });

  it('nothing changed outside the data root, no service holds state, nothing is mounted', async () => {
    showLogs();
    expect(await outsideDataRoot()).toEqual(hostBefore);
    const state = await servicesState(sys);
    expect(state.subid.allocations).toEqual([]);
    expect(state.vol.volumes).toEqual([]);
    expect(state.vol.preps).toEqual([]);
    expect(state.rootfs.clones).toEqual([]);
    expect(await mountsBelow(sys.dir)).toEqual([]);
  });
});
