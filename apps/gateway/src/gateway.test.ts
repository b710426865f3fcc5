/**
 * The gateway over its real unix socket, driven by a gRPC client built from the .proto, against a
 * real nats-server and in-memory fakes of the four services (the real services are e2e/'s).
 */
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { connect as connectHttp2, type ClientHttp2Session } from 'node:http2';
import { connect as connectUnix } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import type { NatsConnection } from '@nats-io/nats-core';
import { GATEWAY_BUCKET, subidAlloc, volByKind } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { run } from '@sysbox-mgr-ts/exec';
import { commonOptions, createLogger, parseConfig } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeServices, type FakeOptions, type FakeServices } from '../test/fake-services.js';
import { gatewayOptions } from './flags.js';
import { startGateway, type Gateway, type GatewaySettings } from './gateway.js';
import type { HostFacts } from './probes.js';
import { sysboxMgrServiceDefinition } from './codec.js';
import { ContainerRecord } from './record.js';
import { grpcClient, rpc, statusOf, type GrpcClient } from '../test/test-support.js';

const log = createLogger({
  service: 'gw-test',
  node: 't',
  version: '0',
  level: process.env.GW_TEST_LOG ? 'debug' : 'silent',
  destination: process.env.GW_TEST_LOG ? process.stderr : new Writable({ write: (_c, _e, cb) => cb() }),
});

const HEADERS = '/usr/src/linux-headers-6.1.0-test';
const LIBMOD = '/lib/modules/6.1.0-test';
const chownHostFacts: HostFacts = {
  kernelRelease: '6.1.0-test',
  hostDistro: 'debian',
  hostKernelHdrPath: HEADERS,
  linuxHeaderMounts: [
    { source: HEADERS, destination: HEADERS, type: 'bind', options: ['ro', 'rbind', 'rprivate'] },
  ],
  libModMounts: [{ source: LIBMOD, destination: LIBMOD, type: 'bind', options: ['ro', 'rbind', 'rprivate'] }],
  idMapMountOk: true,
  // A host where overlayfs cannot sit on ID-mapped mounts: the chown and clone path.
  overlayfsOnIDMapMountOk: false,
  binfmtMiscNamespaced: true,
};

let ns: NatsServer;
let nc: NatsConnection;
let work: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  ns = await startNatsServer({ jetstream: true });
  nc = await ns.connect();
  work = await mkdtemp(join(tmpdir(), 'gw-test-'));
  // The fake allocator hands out blocks from 165536; the suite delegates them, not the host.
  await writeFile(join(work, 'subid'), `sysbox:165536:${2 ** 28}\n`);
  await writeFile(join(work, 'subid-elsewhere'), `sysbox:${2 ** 30}:65536\n`);
});

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

afterAll(async () => {
  await nc?.drain();
  await ns?.stop();
  await rm(work, { recursive: true, force: true });
});

function settings(node: string, socket: string, extra: string[] = []): GatewaySettings {
  const parsed = parseConfig(
    { ...commonOptions, ...gatewayOptions },
    [
      '--node',
      node,
      '--socket',
      socket,
      '--watch-interval-ms',
      '20',
      '--op-timeout-ms',
      '1500',
      '--subuid-file',
      join(work, 'subid'),
      '--subgid-file',
      join(work, 'subid'),
      ...extra,
    ],
    {},
  );
  if ('help' in parsed) throw new Error('help');
  return parsed.config;
}

interface Rig {
  gw: Gateway;
  fakes: FakeServices;
  client: GrpcClient;
  socket: string;
  node: string;
}

let nodeCounter = 0;
async function rig(
  opts: { fakes?: FakeOptions; facts?: Partial<HostFacts>; flags?: string[] } = {},
): Promise<Rig> {
  const node = `gwt${process.pid}x${++nodeCounter}`;
  const socket = join(work, `run-${node}`, 'sysmgr.sock');
  const fakes = startFakeServices(nc, node, log, opts.fakes);
  const gw = await startGateway({
    nc,
    settings: settings(node, socket, opts.flags),
    log,
    facts: { ...chownHostFacts, ...opts.facts },
  });
  const client = grpcClient(socket);
  cleanups.push(async () => {
    client.close();
    await gw.stop();
    await fakes.stopAll();
  });
  return { gw, fakes, client, socket, node };
}

async function until<T>(fn: () => Promise<T | undefined | false>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const emptyReg = (id: string, rootfs: string) => ({
  id,
  rootfs,
  userns: '',
  netns: '',
  uidMappings: [],
  gidMappings: [],
});

describe('socket', () => {
  it('is 0600 in a 0700 dir it created, and a stale socket from a crashed run is replaced', async () => {
    const node = `gwt${process.pid}stale`;
    const dir = join(work, 'stale-run');
    await mkdir(dir, { mode: 0o755 });
    const socket = join(dir, 'sysmgr.sock');
    // A process that bound the socket and died without unlinking it, as kill -9 leaves it.
    await run(
      '/usr/bin/python3',
      ['-c', `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(socket)})`],
      {
        timeout: 10_000,
      },
    );
    expect((await stat(socket)).isSocket()).toBe(true);
    const gw = await startGateway({ nc, settings: settings(node, socket), log, facts: chownHostFacts });
    cleanups.push(() => gw.stop());
    expect((await stat(socket)).mode & 0o777).toBe(0o600);
    const client = grpcClient(socket);
    cleanups.push(async () => client.close());
    const cfg = await rpc(client, 'Register', emptyReg('s1', work));
    expect(cfg.containerConfig.syscontMode).toBe(true);

    // A live server on the socket is never unlinked under it.
    await expect(
      startGateway({ nc, settings: settings(node, socket), log, facts: chownHostFacts }),
    ).rejects.toThrow(/another server is answering/);

    const fresh = join(work, 'fresh-run', 'sub');
    const gw2 = await startGateway({
      nc,
      settings: settings(`${node}b`, join(fresh, 'm.sock')),
      log,
      facts: chownHostFacts,
    });
    cleanups.push(() => gw2.stop());
    expect((await stat(fresh)).mode & 0o777).toBe(0o700);
  });
});

/**
 * One unary call on a raw HTTP/2 session, as grpc-go 1.33 (sysbox-ipc's pinned 1.34) makes it: the
 * dial target, the socket path, as :authority. Resolves the reply, the grpc-status and the RST code.
 */
function rawCall(
  session: ClientHttp2Session,
  authority: string,
  rpcName: 'Register' | 'SubidAlloc',
  req: object,
): Promise<{ reply?: any; grpcStatus?: string; rstCode: number }> {
  const def = sysboxMgrServiceDefinition()[rpcName]!;
  const body = def.requestSerialize(req);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return new Promise((resolve) => {
    const stream = session.request({
      ':method': 'POST',
      ':scheme': 'http',
      ':path': def.path,
      ':authority': authority,
      'content-type': 'application/grpc',
      te: 'trailers',
      'user-agent': 'grpc-go/1.33.3',
    });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('trailers', (t) => (grpcStatus = String(t['grpc-status'])));
    stream.on('error', () => undefined);
    stream.on('close', () => {
      const all = Buffer.concat(chunks);
      resolve({
        reply: all.length >= 5 ? def.responseDeserialize(all.subarray(5)) : undefined,
        grpcStatus,
        rstCode: stream.rstCode ?? 0,
      });
    });
    stream.end(frame);
  });
}

describe('clients that send the socket path as :authority (grpc-go before 1.57)', () => {
  it('are answered on the same socket, several calls on one connection, and beside grpc-js clients', async () => {
    const { client, socket, gw } = await rig();
    const session = connectHttp2('http://localhost', { createConnection: () => connectUnix(socket) });
    cleanups.push(async () => session.close());
    const SOCKET = '/run/sysbox/sysmgr.sock';
    const reg = await rawCall(session, SOCKET, 'Register', emptyReg('auth1', work));
    expect(reg).toMatchObject({ grpcStatus: '0', rstCode: 0 });
    expect(reg.reply.containerConfig.syscontMode).toBe(true);
    // The second and third calls' header blocks refer to the client's dynamic table.
    const alloc = await rawCall(session, SOCKET, 'SubidAlloc', { id: 'auth1', size: 65536 });
    expect(alloc).toMatchObject({ grpcStatus: '0', rstCode: 0, reply: { uid: 165536, gid: 165536 } });
    const reg2 = await rawCall(session, SOCKET, 'Register', emptyReg('auth2', work));
    expect(reg2).toMatchObject({ grpcStatus: '0', rstCode: 0 });
    expect((await gw.table.get('auth1'))?.uidMappings).toHaveLength(1);
    // What newer clients send passes as it is, on connections of their own.
    const other = connectHttp2('http://localhost', { createConnection: () => connectUnix(socket) });
    cleanups.push(async () => other.close());
    expect(
      await rawCall(other, '%2Frun%2Fsysbox%2Fsysmgr.sock', 'Register', emptyReg('auth3', work)),
    ).toMatchObject({
      grpcStatus: '0',
    });
    expect((await rpc(client, 'Register', emptyReg('auth4', work))).containerConfig.syscontMode).toBe(true);
  });
});

describe('replies from services are checked before sysbox-runc sees them', () => {
  it('refuses a subid range the subid files do not delegate, and a volume mount outside the data root', async () => {
    const rootfs = join(work, 'overlay2', 'h1', 'merged');
    await mkdir(rootfs, { recursive: true });
    const elsewhere = join(work, 'subid-elsewhere');
    const { gw, client } = await rig({
      flags: ['--subuid-file', elsewhere, '--subgid-file', elsewhere, '--data-root', '/srv/sysbox'],
    });
    await rpc(client, 'Register', emptyReg('h1', rootfs));
    const alloc = await statusOf(rpc(client, 'SubidAlloc', { id: 'h1', size: 65536 }));
    expect(alloc?.code).toBe(status.INTERNAL);
    expect(alloc?.details).toMatch(/uid 165536\.\..*subid-elsewhere/);
    expect((await gw.table.get('h1'))?.uidMappings).toEqual([]);
    // The fake vol-mgr answers /var/lib/sysbox/docker/h1, not below this gateway's data root.
    const mounts = await statusOf(
      rpc(client, 'ReqMounts', {
        id: 'h1',
        rootfsUidShiftType: 2,
        reqList: [{ kind: 0, dest: '/var/lib/docker' }],
      }),
    );
    expect(mounts?.code).toBe(status.INTERNAL);
    expect(mounts?.details).toContain('/srv/sysbox/docker/h1');
    expect((await gw.table.get('h1'))?.containerMounts.some((m) => m.source.includes('docker'))).toBe(false);
  });
});

describe('sysbox-runc call order', () => {
  it('chown-mode container with a clone and a docker volume: create, pause, resume, stop, restart, stop, removal', async () => {
    const base = join(work, 'overlay2', 'c1');
    const rootfs = join(base, 'merged');
    const origWorkDir = join(base, 'workdir');
    await mkdir(rootfs, { recursive: true });
    await mkdir(join(origWorkDir, 'work'), { recursive: true });
    const prepSrc = join(work, 'c1-data');
    await mkdir(prepSrc);
    const { gw, fakes, client } = await rig({ fakes: { origWorkDirOf: () => origWorkDir } });
    const id = 'c1';

    // create
    const reg = await rpc(client, 'Register', emptyReg(id, rootfs));
    expect(reg.containerConfig).toMatchObject({
      aliasDns: true,
      ShiftfsOk: false,
      IDMapMountOk: true,
      OverlayfsOnIDMapMountOk: false,
      syscontMode: true,
      noRootfsCloning: false,
      uidMappings: [],
      rootfsUidShiftType: 0,
    });
    const ids = await rpc(client, 'SubidAlloc', { id, size: 65536 });
    expect(ids.uid).toBeGreaterThanOrEqual(165536);
    const clone = await rpc(client, 'ReqCloneRootfs', { id });
    expect(clone.rootfs).toBe('/var/lib/sysbox/rootfs/c1/overlay2/merged');
    await rpc(client, 'Update', {
      id,
      userns: '/proc/self/ns/user',
      netns: '/proc/self/ns/net',
      uidMappings: [],
      gidMappings: [],
      rootfsUidShiftType: 4,
    });
    await rpc(client, 'PrepMounts', {
      id,
      uid: ids.uid,
      gid: ids.gid,
      prepList: [{ source: prepSrc, exclusive: true }],
    });
    const mounts = (
      await rpc(client, 'ReqMounts', {
        id,
        rootfsUidShiftType: 4,
        reqList: [{ kind: 0, dest: '/var/lib/docker' }],
      })
    ).mounts;
    expect(mounts).toEqual([
      {
        source: '/var/lib/sysbox/docker/c1',
        dest: '/var/lib/docker',
        type: 'bind',
        opt: ['rbind', 'rprivate'],
      },
      { source: HEADERS, dest: HEADERS, type: 'bind', opt: ['ro', 'rbind', 'rprivate'] },
      { source: LIBMOD, dest: LIBMOD, type: 'bind', opt: ['ro', 'rbind', 'rprivate'] },
      {
        source: 'binfmt_misc',
        dest: '/proc/sys/fs/binfmt_misc',
        type: 'binfmt_misc',
        opt: ['noexec', 'nosuid', 'nodev'],
      },
    ]);
    const create = fakes.calls.find((c) => c.op === 'vol.docker-create')!.req;
    expect(create).toEqual({
      id,
      rootfs: clone.rootfs,
      mountpoint: '/var/lib/docker',
      uid: ids.uid,
      gid: ids.gid,
      chownOnSync: true,
      perm: 0o700,
      timeLimit: 'unbounded',
    });
    expect((await rpc(client, 'ReqFsState', { id, rootfs: clone.rootfs })).fsEntries).toEqual([]);
    await rpc(client, 'ChownClonedRootfs', { id, uidOffset: ids.uid, gidOffset: ids.gid });
    expect(fakes.ops()).toEqual([
      'shiftfs.list',
      'subid.alloc',
      'rootfs.create-clone',
      'vol.prep',
      'vol.docker-create',
      'rootfs.chown-clone',
    ]);

    // pause and resume: the clone's chown is reverted and redone, volumes synced out
    fakes.calls.length = 0;
    await rpc(client, 'Pause', { id });
    await rpc(client, 'Resume', { id });
    expect(fakes.ops()).toEqual(['rootfs.revert-chown', 'vol.docker-sync-out', 'rootfs.chown-clone']);
    expect(fakes.calls[2]!.req).toEqual({ id, uidOffset: ids.uid, gidOffset: ids.gid });

    // stop
    fakes.calls.length = 0;
    await rpc(client, 'Unregister', { id });
    expect(fakes.ops()).toEqual(['vol.revert-prep', 'vol.docker-sync-out', 'rootfs.container-stopped']);
    expect(gw.watcher.watching()).toEqual([{ id, path: join(origWorkDir, 'work') }]);
    expect((await statusOf(rpc(client, 'Unregister', { id })))?.code).toBe(status.FAILED_PRECONDITION);

    // restart: same mounts, same ids, no new volume and no new sync-in
    fakes.calls.length = 0;
    const again = await rpc(client, 'Register', emptyReg(id, rootfs));
    expect(again.containerConfig.uidMappings).toEqual([{ containerID: 0, hostID: ids.uid, size: 65536 }]);
    expect(gw.watcher.watching()).toEqual([]);
    expect(await rpc(client, 'SubidAlloc', { id, size: 65536 })).toEqual(ids);
    expect((await rpc(client, 'ReqCloneRootfs', { id })).rootfs).toBe(clone.rootfs);
    const mountsAgain = (
      await rpc(client, 'ReqMounts', {
        id,
        rootfsUidShiftType: 4,
        reqList: [{ kind: 0, dest: '/var/lib/docker' }],
      })
    ).mounts;
    expect(mountsAgain).toEqual(mounts);
    expect(fakes.ops()).toEqual([]);
    expect((await statusOf(rpc(client, 'Register', emptyReg(id, rootfs))))?.code).toBe(
      status.FAILED_PRECONDITION,
    );

    // stop, then the runtime removes the container: everything is released
    await rpc(client, 'Unregister', { id });
    fakes.calls.length = 0;
    await rm(join(origWorkDir, 'work'), { recursive: true });
    await until(async () => (await gw.table.get(id)) === undefined);
    expect(fakes.ops()).toEqual(['vol.docker-destroy', 'subid.free', 'rootfs.remove-clone']);
    expect(gw.watcher.watching()).toEqual([]);
    expect((await statusOf(rpc(client, 'Pause', { id })))?.code).toBe(status.NOT_FOUND);
  });

  it('ID-mapped container on a real overlay: upper-dir chown recorded on update, reverted on pause and stop', async () => {
    const dir = join(work, 'idmap');
    const [lower, upper, wd, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(dir, d));
    for (const d of [lower, upper, wd, merged]) await mkdir(d!, { recursive: true });
    await writeFile(join(lower!, 'hello'), 'hi');
    await run(
      'mount',
      ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${wd}`, merged!],
      {
        timeout: 10_000,
      },
    );
    cleanups.push(() => run('umount', ['-l', merged!], { timeout: 10_000 }));
    const { fakes, client } = await rig({ facts: { overlayfsOnIDMapMountOk: true } });
    const id = 'idm-1';
    const map = [{ containerID: 0, hostID: 231072, size: 65536 }];
    const reg = await rpc(client, 'Register', {
      ...emptyReg(id, merged!),
      uidMappings: map,
      gidMappings: map,
    });
    expect(reg.containerConfig.OverlayfsOnIDMapMountOk).toBe(true);
    await rpc(client, 'Update', {
      id,
      userns: '',
      netns: '',
      uidMappings: [],
      gidMappings: [],
      rootfsUidShiftType: 2,
    });
    await rpc(client, 'ReqMounts', {
      id,
      rootfsUidShiftType: 2,
      reqList: [{ kind: 1, dest: '/var/lib/kubelet' }],
    });
    await rpc(client, 'Pause', { id });
    await rpc(client, 'Resume', { id });
    await rpc(client, 'Unregister', { id });
    const ops = fakes.calls.filter((c) => c.op !== 'shiftfs.list');
    expect(ops.map((c) => c.op)).toEqual([
      'rootfs.shift-upper',
      'vol.kubelet-create',
      'rootfs.revert-upper',
      'vol.kubelet-sync-out',
      'rootfs.shift-upper',
      'rootfs.revert-upper',
      'vol.kubelet-sync-out',
    ]);
    // sysbox-runc chowned the upper dir on create: Update records it, Resume shifts it for real.
    expect(ops[0]!.req).toEqual({
      id,
      upperDir: upper,
      uidOffset: 231072,
      gidOffset: 231072,
      alreadyShifted: true,
    });
    expect(ops[4]!.req).toEqual({
      id,
      upperDir: upper,
      uidOffset: 231072,
      gidOffset: 231072,
      alreadyShifted: false,
    });
    expect(ops[1]!.req).toMatchObject({ uid: 0, gid: 0, chownOnSync: false, perm: 0o755 });
  });

  it('two containers sharing a netns share the first one’s userns and maps', async () => {
    const { client } = await rig();
    const map = [{ containerID: 0, hostID: 300000, size: 65536 }];
    await rpc(client, 'Register', {
      id: 'pod-a',
      rootfs: work,
      userns: '/proc/self/ns/user',
      netns: '/proc/self/ns/net',
      uidMappings: map,
      gidMappings: map,
    });
    const b = await rpc(client, 'Register', { ...emptyReg('pod-b', work), netns: '/proc/self/ns/net' });
    expect(b.containerConfig.userns).toBe('/proc/self/ns/user');
    expect(b.containerConfig.uidMappings).toEqual(map);
    expect(b.containerConfig.gidMappings).toEqual(map);
    // Once the first leaves the netns, a newcomer with its own userns keeps its own.
    await rpc(client, 'Unregister', { id: 'pod-a' });
    const c = await rpc(client, 'Register', {
      ...emptyReg('pod-c', work),
      netns: '/proc/self/ns/net',
      userns: '/proc/1/ns/user',
    });
    expect(c.containerConfig.userns).toBe('/proc/1/ns/user');
  });
});

const UNKNOWN_CALLS: [string, object][] = [
  ['Update', { id: 'nope', rootfsUidShiftType: 0 }],
  ['Unregister', { id: 'nope' }],
  ['SubidAlloc', { id: 'nope', size: 65536 }],
  ['PrepMounts', { id: 'nope', uid: 1, gid: 1, prepList: [] }],
  ['ReqMounts', { id: 'nope', rootfsUidShiftType: 4, reqList: [] }],
  ['ReqShiftfsMark', { id: 'nope', shiftfsMarks: [] }],
  ['ReqFsState', { id: 'nope', rootfs: '/' }],
  ['Pause', { id: 'nope' }],
  ['Resume', { id: 'nope' }],
  ['ReqCloneRootfs', { id: 'nope' }],
  ['ChownClonedRootfs', { id: 'nope', uidOffset: 1, gidOffset: 1 }],
  ['RevertClonedRootfsChown', { id: 'nope' }],
];

describe('errors', () => {
  it('every rpc on an unknown container answers NOT_FOUND naming it; Register of a missing rootfs INVALID_ARGUMENT', async () => {
    const { client, fakes } = await rig();
    for (const [method, req] of UNKNOWN_CALLS) {
      const s = await statusOf(rpc(client, method, req));
      expect({ method, code: s?.code }).toEqual({ method, code: status.NOT_FOUND });
      expect(s!.details).toContain('nope');
    }
    const s = await statusOf(rpc(client, 'Register', emptyReg('nope', join(work, 'missing-rootfs'))));
    expect(s?.code).toBe(status.INVALID_ARGUMENT);
    expect(fakes.ops().filter((o) => o !== 'shiftfs.list')).toEqual([]);
  });

  it('hostile ids and paths answer INVALID_ARGUMENT and change nothing', async () => {
    const { client, gw } = await rig();
    const hostile = ['../etc', 'a/b', '', 'x'.repeat(200), 'a\nb', '..'];
    for (const id of hostile) {
      for (const [method, req] of [['Register', emptyReg(id, work)] as const, ...UNKNOWN_CALLS]) {
        const s = await statusOf(rpc(client, method, { ...req, id }));
        expect({ method, id, code: s?.code }).toEqual({ method, id, code: status.INVALID_ARGUMENT });
      }
    }
    await rpc(client, 'Register', emptyReg('ok', work));
    for (const [method, req] of [
      ['Register', emptyReg('ok2', 'relative/rootfs')],
      ['Register', { ...emptyReg('ok3', work), netns: '/proc/../etc' }],
      ['ReqMounts', { id: 'ok', rootfsUidShiftType: 4, reqList: [{ kind: 7, dest: '/x' }] }],
      ['ReqMounts', { id: 'ok', rootfsUidShiftType: 9, reqList: [] }],
      ['PrepMounts', { id: 'ok', uid: 1, gid: 1, prepList: [{ source: '/a/../b', exclusive: false }] }],
    ] as const) {
      expect((await statusOf(rpc(client, method, req)))?.code).toBe(status.INVALID_ARGUMENT);
    }
    expect(await gw.table.get('ok2')).toBeUndefined();
    expect((await gw.table.get('ok'))?.volumeKinds).toEqual([]);
  });

  it('a stopped service answers UNAVAILABLE once the service wait runs out, not before', async () => {
    const { client, fakes } = await rig({ flags: ['--service-wait-ms', '600'] });
    await rpc(client, 'Register', emptyReg('u1', work));
    await fakes.stop('subid');
    // UNAVAILABLE, not DEADLINE_EXCEEDED: the 600 ms service wait ran out, not the 10 s op timeout.
    const s = await statusOf(rpc(client, 'SubidAlloc', { id: 'u1', size: 65536 }));
    expect(s?.code).toBe(status.UNAVAILABLE);
    expect(s!.details).toMatch(/container u1/);
    // Not before: a service back within the wait serves the call that was waiting for it.
    const waiting = rpc(client, 'SubidAlloc', { id: 'u1', size: 65536 });
    await new Promise((r) => setTimeout(r, 100));
    fakes.start('subid');
    expect(await waiting).toMatchObject({ uid: expect.any(Number) });
  });

  it("normalizes inner data-root paths as written in a container's config, and refuses one that climbs out", async () => {
    const { client, fakes } = await rig();
    await rpc(client, 'Register', emptyReg('np1', work));
    await rpc(client, 'SubidAlloc', { id: 'np1', size: 65536 });
    await rpc(client, 'ReqMounts', {
      id: 'np1',
      rootfsUidShiftType: 4,
      reqList: [{ kind: 0, dest: '//var/lib//docker/.' }],
    });
    expect(fakes.calls.find((c) => c.op === 'vol.docker-create')!.req.mountpoint).toBe('/var/lib/docker');
    const bad = await statusOf(
      rpc(client, 'ReqMounts', {
        id: 'np1',
        rootfsUidShiftType: 4,
        reqList: [{ kind: 1, dest: '/var/../../etc' }],
      }),
    );
    expect(bad?.code).toBe(status.INVALID_ARGUMENT);
    expect(bad?.details).toMatch(/"\/var\/\.\.\/\.\.\/etc".*climbs above the container root/);
  });

  it('ReqMounts has no gateway-side bound: a sync-in longer than the long-op bound still answers', async () => {
    const { client, fakes, node } = await rig({ flags: ['--long-op-timeout-ms', '300'] });
    await rpc(client, 'Register', emptyReg('slow1', work));
    await rpc(client, 'SubidAlloc', { id: 'slow1', size: 65536 });
    await fakes.stop('vol');
    // A vol-mgr whose sync-in of a big inner image takes longer than the long-op bound.
    const slow = nc.subscribe(volByKind.docker.create.subject(node), {
      callback: (_e, m) =>
        void setTimeout(
          () =>
            m.respond(
              JSON.stringify({
                mounts: [
                  {
                    destination: '/var/lib/docker',
                    source: '/var/lib/sysbox/docker/slow1',
                    type: 'bind',
                    options: ['rbind', 'rprivate'],
                  },
                ],
              }),
            ),
          1000,
        ),
    });
    await nc.flush();
    const reply = await rpc(client, 'ReqMounts', {
      id: 'slow1',
      rootfsUidShiftType: 4,
      reqList: [{ kind: 0, dest: '/var/lib/docker' }],
    });
    slow.unsubscribe();
    expect(reply.mounts[0]).toMatchObject({
      source: '/var/lib/sysbox/docker/slow1',
      dest: '/var/lib/docker',
    });
  });

  it('a call waits for a service that comes back within the service wait (a daemon restarting)', async () => {
    const { client, fakes } = await rig({ flags: ['--service-wait-ms', '3000'] });
    await rpc(client, 'Register', emptyReg('w1', work));
    await fakes.stop('subid');
    const restart = setTimeout(() => fakes.start('subid'), 700);
    const reply = await rpc(client, 'SubidAlloc', { id: 'w1', size: 65536 });
    clearTimeout(restart);
    expect(reply).toMatchObject({ uid: expect.any(Number) });
    expect(fakes.ops().filter((op) => op === 'subid.alloc')).toHaveLength(1);
  });
});

describe('durability', () => {
  it('a removal that a service could not finish keeps the record and completes on retry', async () => {
    const { gw, fakes, client, node } = await rig();
    const rootfs = join(work, 'rel-1');
    await mkdir(rootfs);
    await rpc(client, 'Register', emptyReg('rel-1', rootfs));
    await rpc(client, 'SubidAlloc', { id: 'rel-1', size: 65536 });
    await rpc(client, 'ReqMounts', {
      id: 'rel-1',
      rootfsUidShiftType: 4,
      reqList: [{ kind: 0, dest: '/var/lib/docker' }],
    });
    await rpc(client, 'Unregister', { id: 'rel-1' });
    await fakes.stop('vol');

    await expect(gw.removeContainer('rel-1')).rejects.toMatchObject({ code: 'unavailable' });
    expect((await gw.table.get('rel-1'))?.state).toBe('stopped');
    expect(fakes.ops()).toContain('subid.free');

    const vol = startFakeServices(nc, node, log, { only: ['vol'] });
    cleanups.push(() => vol.stopAll());
    await nc.flush();
    expect(await gw.removeContainer('rel-1')).toBe(true);
    expect(vol.ops()).toEqual(['vol.docker-destroy']);
    expect(await gw.table.get('rel-1')).toBeUndefined();
  });

  it('a SubidAlloc whose reply never came is still released at removal (freed by container id)', async () => {
    const { gw, fakes, client, node } = await rig();
    await rpc(client, 'Register', emptyReg('lost-1', work));
    await fakes.stop('subid');
    // An allocator that takes the request and dies before answering: the range may exist.
    const taken: string[] = [];
    const silent = nc.subscribe(subidAlloc.subject(node), {
      callback: (_e, m) => void taken.push(m.string()),
    });
    expect((await statusOf(rpc(client, 'SubidAlloc', { id: 'lost-1', size: 65536 })))?.code).toBe(
      status.DEADLINE_EXCEEDED,
    );
    silent.unsubscribe();
    expect(taken).toHaveLength(1);
    expect((await gw.table.get('lost-1'))?.subidAllocated).toBe(false);

    fakes.start('subid');
    await nc.flush();
    await rpc(client, 'Unregister', { id: 'lost-1' });
    fakes.calls.length = 0;
    expect(await gw.removeContainer('lost-1')).toBe(true);
    expect(fakes.ops()).toEqual(['subid.free']);
  });

  it("SubidAlloc writes nothing, the record's next write carries the range, and a gateway lost before it is succeeded by one that adopts the range", async () => {
    const node = `gwt${process.pid}held`;
    const socket = join(work, 'held-run', 'sysmgr.sock');
    const fakes = startFakeServices(nc, node, log);
    cleanups.push(() => fakes.stopAll());
    const stored = createStateStore(await openBucket(nc, GATEWAY_BUCKET), {
      node,
      namespace: 'containers',
      schema: ContainerRecord,
    });
    const rangeOf = async (id: string) => {
      const rec = (await stored.get(id))?.value;
      return rec && { subidAllocated: rec.subidAllocated, uid: rec.uidMappings[0]?.hostId };
    };
    const docker = (id: string) => ({
      id,
      rootfsUidShiftType: 4,
      reqList: [{ kind: 0, dest: '/var/lib/docker' }],
    });
    const start = async (retryMs = 5000) => {
      const gw = await startGateway({
        nc,
        settings: settings(node, socket),
        log,
        facts: chownHostFacts,
        subidReconcileRetry: { firstMs: retryMs, maxMs: retryMs },
      });
      const client = grpcClient(socket);
      cleanups.push(async () => (client.close(), await gw.stop()));
      return { gw, client };
    };

    let { gw, client } = await start();
    for (const id of ['held-a', 'held-b', 'held-c']) await rpc(client, 'Register', emptyReg(id, work));
    const ranges = new Map<string, { uid: number }>();
    for (const id of ['held-a', 'held-b', 'held-c'])
      ranges.set(id, await rpc(client, 'SubidAlloc', { id, size: 65536 }));
    expect(await rangeOf('held-a')).toEqual({ subidAllocated: false, uid: undefined });
    // The next write carries it.
    await rpc(client, 'ReqMounts', docker('held-a'));
    expect(await rangeOf('held-a')).toEqual({ subidAllocated: true, uid: ranges.get('held-a')!.uid });
    expect(await rangeOf('held-b')).toEqual({ subidAllocated: false, uid: undefined });

    // Lost before held-b's and held-c's next write; the successor adopts at start, and a call
    // that comes at once waits for that.
    client.close();
    await gw.stop();
    ({ gw, client } = await start());
    await rpc(client, 'ReqMounts', docker('held-b'));
    await gw.subidReconcile.done;
    expect(await rangeOf('held-b')).toEqual({ subidAllocated: true, uid: ranges.get('held-b')!.uid });
    expect(await rangeOf('held-c')).toEqual({ subidAllocated: true, uid: ranges.get('held-c')!.uid });
    expect(await rpc(client, 'SubidAlloc', { id: 'held-c', size: 65536 })).toEqual(ranges.get('held-c'));

    // Lost again, and the allocator is down when the next one starts: calls go on without the
    // range until the allocator answers, and the adoption is tried again until it does.
    await rpc(client, 'Register', emptyReg('held-d', work));
    ranges.set('held-d', await rpc(client, 'SubidAlloc', { id: 'held-d', size: 65536 }));
    client.close();
    await gw.stop();
    await fakes.stop('subid');
    ({ gw, client } = await start(50));
    expect((await statusOf(rpc(client, 'ReqMounts', docker('held-d'))))?.code).toBe(
      status.FAILED_PRECONDITION,
    );
    expect(await rangeOf('held-d')).toEqual({ subidAllocated: false, uid: undefined });
    fakes.start('subid');
    await gw.subidReconcile.done;
    expect(await rangeOf('held-d')).toEqual({ subidAllocated: true, uid: ranges.get('held-d')!.uid });
    await rpc(client, 'ReqMounts', docker('held-d'));
  });

  it('a second gateway on the same KV, after the first is gone, resumes the table and the removal watch', async () => {
    const node = `gwt${process.pid}dur`;
    const socket = join(work, 'dur-run', 'sysmgr.sock');
    const fakes = startFakeServices(nc, node, log);
    cleanups.push(() => fakes.stopAll());
    const rootfsA = join(work, 'dur-a');
    await mkdir(rootfsA);
    const first = await startGateway({ nc, settings: settings(node, socket), log, facts: chownHostFacts });
    let client = grpcClient(socket);
    await rpc(client, 'Register', emptyReg('dur-a', rootfsA));
    const ids = await rpc(client, 'SubidAlloc', { id: 'dur-a', size: 65536 });
    await rpc(client, 'ReqMounts', {
      id: 'dur-a',
      rootfsUidShiftType: 4,
      reqList: [{ kind: 0, dest: '/var/lib/docker' }],
    });
    await rpc(client, 'Unregister', { id: 'dur-a' });
    await rpc(client, 'Register', emptyReg('dur-b', work));
    client.close();
    await first.stop();

    const second = await startGateway({ nc, settings: settings(node, socket), log, facts: chownHostFacts });
    cleanups.push(() => second.stop());
    client = grpcClient(socket);
    cleanups.push(async () => client.close());
    expect(second.watcher.watching()).toEqual([{ id: 'dur-a', path: rootfsA }]);
    // The running container carries on: a second Register is still redundant, Unregister works.
    expect((await statusOf(rpc(client, 'Register', emptyReg('dur-b', work))))?.code).toBe(
      status.FAILED_PRECONDITION,
    );
    await rpc(client, 'Unregister', { id: 'dur-b' });
    // The watch resumed by the second gateway releases the stopped one.
    fakes.calls.length = 0;
    await rm(rootfsA, { recursive: true });
    await until(async () => (await second.table.get('dur-a')) === undefined);
    expect(fakes.ops()).toEqual(['vol.docker-destroy', 'subid.free']);
    expect(fakes.calls[1]!.req).toEqual({ id: 'dur-a' });
    expect(ids.uid).toBeGreaterThan(0);
  });
});
