/**
 * The gateway over its real socket (rig: test/gateway-rig.ts): errors as sysbox-runc sees them,
 * and what survives a failed service, a lost reply and a lost gateway.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { GATEWAY_BUCKET, subidAlloc, volByKind } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { describe, expect, it } from 'vitest';
import { startFakeServices } from '../test/fake-services.js';
import {
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
import { ContainerRecord } from './record.js';
import { grpcClient, rpc, statusOf } from '../test/test-support.js';

useGatewayRig();

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
