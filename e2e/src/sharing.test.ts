/**
 * Scenario 3: what containers share. Two containers in one network namespace (a Kubernetes pod)
 * share the first one's user namespace and ids, which shows on the host as the second one's
 * volume owned by the first one's ids. Two containers preparing the same exclusive bind-mount
 * source: it is shifted once, and restored only when both have stopped.
 */
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { run } from '@sysbox-mgr-ts/exec';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { KIND, SHIFT } from './lifecycle.js';
import { entries, mountsBelow, owner, servicesState, until } from './runtime.js';

describe('containers sharing a netns and a mount source', () => {
  let sys: System;
  let client: SysboxMgrClient;

  beforeAll(async () => {
    sys = await startSystem({ args: { gateway: ['--disable-ovfs-on-idmapped-mount'] } });
    client = connectGateway(sys.socket);
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  const rootfsFor = async (id: string) => {
    const r = join(sys.dir, 'rootfs', id);
    await mkdir(join(r, 'var', 'lib', 'docker'), { recursive: true });
    return r;
  };
  const release = async (id: string, rootfs: string) => {
    await rpc(client, 'Unregister', { id });
    await rm(rootfs, { recursive: true });
    await until(
      `release of ${id}`,
      async () => (await statusOf(rpc(client, 'Pause', { id })))?.code === status.NOT_FOUND,
    );
  };

  it('a pod: the second container in a netns gets the first one’s userns and ids, and its volume is owned by them', async () => {
    showLogs();
    // A network namespace of its own, pinned to a file as runtimes pin them.
    const netns = join(sys.dir, 'netns-pod');
    await writeFile(netns, '');
    await run('unshare', [`--net=${netns}`, 'true'], { timeout: 10_000 });
    try {
      const ra = await rootfsFor('pod-a');
      const rb = await rootfsFor('pod-b');
      await rpc(client, 'Register', {
        id: 'pod-a',
        rootfs: ra,
        userns: '',
        netns: '',
        uidMappings: [],
        gidMappings: [],
      });
      const ids = await rpc(client, 'SubidAlloc', { id: 'pod-a', size: 65536 });
      const map = [{ containerID: 0, hostID: ids.uid, size: 65536 }];
      await rpc(client, 'Update', {
        id: 'pod-a',
        userns: '/proc/1/ns/user',
        netns,
        uidMappings: map,
        gidMappings: map,
        rootfsUidShiftType: SHIFT.chown,
      });

      const b = await rpc(client, 'Register', {
        id: 'pod-b',
        rootfs: rb,
        userns: '',
        netns,
        uidMappings: [],
        gidMappings: [],
      });
      expect(b.containerConfig.userns).toBe('/proc/1/ns/user');
      expect(b.containerConfig.uidMappings).toEqual(map);
      // sysbox-runc joins that userns: no SubidAlloc for pod-b. Its volume takes the shared ids.
      await rpc(client, 'ReqMounts', {
        id: 'pod-b',
        rootfsUidShiftType: SHIFT.chown,
        reqList: [{ kind: KIND.docker, dest: '/var/lib/docker' }],
      });
      expect(owner(join(sys.dataRoot, 'docker', 'pod-b'))).toBe(`${ids.uid}:${ids.gid}`);
      expect((await servicesState(sys)).subid.allocations.map((a) => a.id)).toEqual(['pod-a']);

      await release('pod-a', ra);
      await release('pod-b', rb);
      expect(entries(join(sys.dataRoot, 'docker'))).toEqual([]);
      expect((await servicesState(sys)).subid.allocations).toEqual([]);
      // The pod is gone: a newcomer in that netns with its own userns keeps its own.
      const rc = await rootfsFor('pod-c');
      const c = await rpc(client, 'Register', {
        id: 'pod-c',
        rootfs: rc,
        userns: '/proc/self/ns/user',
        netns,
        uidMappings: [],
        gidMappings: [],
      });
      expect(c.containerConfig.userns).toBe('/proc/self/ns/user');
      await release('pod-c', rc);
    } finally {
      await run('umount', [netns], { timeout: 10_000 });
    }
  });

  it('one exclusive mount source prepared by two containers: shifted once, restored after both stop', async () => {
    showLogs();
    const src = join(sys.dir, 'shared-data');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'sub', 'f'), 'data\n');
    await chown(join(src, 'sub'), 1000, 1000);
    const owners = () => [owner(src), owner(join(src, 'sub')), owner(join(src, 'sub', 'f'))];
    const ra = await rootfsFor('x-a');
    const rb = await rootfsFor('x-b');
    const ids: Record<string, { uid: number; gid: number }> = {};
    for (const [id, r] of [
      ['x-a', ra],
      ['x-b', rb],
    ] as const) {
      await rpc(client, 'Register', {
        id,
        rootfs: r,
        userns: '',
        netns: '',
        uidMappings: [],
        gidMappings: [],
      });
      ids[id] = await rpc(client, 'SubidAlloc', { id, size: 65536 });
      await rpc(client, 'PrepMounts', {
        id,
        uid: ids[id]!.uid,
        gid: ids[id]!.gid,
        prepList: [{ source: src, exclusive: true }],
      });
    }
    const { uid, gid } = ids['x-a']!;
    // Shifted once, by the first container's offset (not twice).
    expect(owners()).toEqual([`${uid}:${gid}`, `${uid + 1000}:${gid + 1000}`, `${uid}:${gid}`]);
    expect((await servicesState(sys)).vol.preps).toMatchObject([
      { holders: expect.arrayContaining(['x-a', 'x-b']) },
    ]);
    await rpc(client, 'Unregister', { id: 'x-a' });
    expect(owners()).toEqual([`${uid}:${gid}`, `${uid + 1000}:${gid + 1000}`, `${uid}:${gid}`]);
    await rpc(client, 'Unregister', { id: 'x-b' });
    expect(owners()).toEqual(['0:0', '1000:1000', '0:0']);
    expect((await servicesState(sys)).vol.preps).toEqual([]);
    for (const [id, r] of [
      ['x-a', ra],
      ['x-b', rb],
    ] as const) {
      await rm(r, { recursive: true });
      await until(
        `release of ${id}`,
        async () => (await statusOf(rpc(client, 'Pause', { id })))?.code === status.NOT_FOUND,
      );
    }
    expect((await servicesState(sys)).subid.allocations).toEqual([]);
    expect(await mountsBelow(sys.dir)).toEqual([]);
  });
});
