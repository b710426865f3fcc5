/**
 * Scenario 2: an ID-mapped-mode container (overlayfs on ID-mapped mounts). sysbox-runc chowns the
 * rootfs' upper dir itself before Update (overlayfs cannot ID-map it); Update records that chown,
 * Pause and Unregister give the upper dir back its at-rest owners, Resume shifts it again.
 */
import { mkdir, writeFile, chown } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { KIND, SHIFT } from './lifecycle.js';
import {
  buildImage,
  entries,
  mountContainerRootfs,
  mountsBelow,
  owner,
  removeLikeDocker,
  servicesState,
  shiftTree,
  text,
  until,
  type ContainerRootfs,
} from './runtime.js';

describe('ID-mapped-mode container through the gateway', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let r: ContainerRootfs;
  let uid = 0;
  const id = 'idmapped-1';

  beforeAll(async () => {
    sys = await startSystem();
    client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    r = await mountContainerRootfs(overlay2, id, await buildImage(overlay2, 'img'));
    // What the container wrote in an earlier life: its upper dir at rest, host root and user 1000.
    await mkdir(join(r.merged, 'home', 'user', 'work'));
    await chown(join(r.merged, 'home', 'user', 'work'), 1000, 1000);
    await writeFile(join(r.merged, 'etc', 'hostname'), 'box\n');
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));
  const upperOwners = () => [
    owner(join(r.upper, 'etc', 'hostname')),
    owner(join(r.upper, 'home', 'user', 'work')),
  ];

  it('create: runc chowns the upper, Update records it, volumes are owned by root (ID-mapped)', async () => {
    showLogs();
    const reg = await rpc(client, 'Register', {
      id,
      rootfs: r.merged,
      userns: '',
      netns: '',
      uidMappings: [],
      gidMappings: [],
    });
    expect(reg.containerConfig.OverlayfsOnIDMapMountOk).toBe(true);
    ({ uid } = await rpc(client, 'SubidAlloc', { id, size: 65536 }));
    await shiftTree(r.upper, uid);
    const map = [{ containerID: 0, hostID: uid, size: 65536 }];
    await rpc(client, 'Update', {
      id,
      userns: '',
      netns: '',
      uidMappings: map,
      gidMappings: map,
      rootfsUidShiftType: SHIFT.idMapped,
    });
    expect(upperOwners()).toEqual([`${uid}:${uid}`, `${uid + 1000}:${uid + 1000}`]);
    expect((await servicesState(sys)).rootfs.uppers).toMatchObject([{ id }]);
    const mounts = (
      await rpc(client, 'ReqMounts', {
        id,
        rootfsUidShiftType: SHIFT.idMapped,
        reqList: [
          { kind: KIND.docker, dest: '/var/lib/docker' },
          { kind: KIND.kubelet, dest: '/var/lib/kubelet' },
        ],
      })
    ).mounts;
    expect(mounts[0]).toEqual({
      source: join(sys.dataRoot, 'docker', id),
      dest: '/var/lib/docker',
      type: 'bind',
      opt: ['rbind', 'rprivate'],
    });
    expect(owner(join(sys.dataRoot, 'docker', id))).toBe('0:0');
    expect(owner(join(sys.dataRoot, 'docker', id, 'image', 'overlay2', 'repositories.json'))).toBe('0:0');
    await rpc(client, 'ReqFsState', { id, rootfs: r.merged });
    // The inner Docker writes through the ID-mapped mount: host-side it is root's.
    await writeFile(join(sys.dataRoot, 'docker', id, 'inner.txt'), 'from the inner docker\n');
  });

  it('pause reverts the upper-dir chown and syncs out; resume shifts it again', async () => {
    showLogs();
    await rpc(client, 'Pause', { id });
    expect(upperOwners()).toEqual(['0:0', '1000:1000']);
    expect(await text(join(r.upper, 'var', 'lib', 'docker', 'inner.txt'))).toBe('from the inner docker\n');
    await rpc(client, 'Resume', { id });
    expect(upperOwners()).toEqual([`${uid}:${uid}`, `${uid + 1000}:${uid + 1000}`]);
  });

  it('stop (Unregister) reverts the upper dir to its at-rest owners', async () => {
    showLogs();
    await rpc(client, 'Unregister', { id });
    expect(upperOwners()).toEqual(['0:0', '1000:1000']);
    expect((await servicesState(sys)).rootfs.uppers).toEqual([]);
  });

  it('removal releases the volumes and the ids', async () => {
    showLogs();
    await removeLikeDocker(r, async () => {
      await until(
        'release',
        async () => (await statusOf(rpc(client, 'Pause', { id })))?.code === status.NOT_FOUND,
      );
    });
    expect(entries(join(sys.dataRoot, 'docker'))).toEqual([]);
    expect(entries(join(sys.dataRoot, 'kubelet'))).toEqual([]);
    const state = await servicesState(sys);
    expect(state.subid.allocations).toEqual([]);
    expect(state.vol.volumes).toEqual([]);
    expect(await mountsBelow(sys.dir)).toEqual([]);
  });
});
