/**
 * The gateway over its real unix socket, driven by a gRPC client built from the .proto, against a
 * real nats-server and in-memory fakes of the four services (the real services are e2e/'s): the
 * socket, its clients, reply checks and sysbox-runc's call order. Errors and durability:
 * gateway-durability.test.ts.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { connect as connectHttp2, type ClientHttp2Session } from 'node:http2';
import { connect as connectUnix } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { run } from '@sysbox-mgr-ts/exec';
import { describe, expect, it } from 'vitest';
import {
  HEADERS,
  LIBMOD,
  chownHostFacts,
  cleanups,
  emptyReg,
  log,
  nc,
  rig,
  settings,
  until,
  useGatewayRig,
  work,
} from '../test/gateway-rig.js';
import { startGateway } from './gateway.js';
import { sysboxMgrServiceDefinition } from './codec.js';
import { grpcClient, rpc, statusOf } from '../test/test-support.js';

useGatewayRig();

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
