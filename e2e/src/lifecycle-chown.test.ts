/**
 * Scenario 1: sysbox-runc's full lifecycle through the gateway socket for a chown-mode container
 * with a cloned overlay rootfs, a docker and a kubelet volume, checked on the host at each step.
 */
import { existsSync, statSync } from 'node:fs';
import { chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { overlayOptions } from '@sysbox-mgr-ts/mountinfo';
import { connectGateway, rpc, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import {
  dockerVolume,
  newChownContainer,
  runStep,
  type ChownContainer,
  type LifecycleOptions,
} from './lifecycle.js';
import { buildImage, entries, mountsBelow, mountsOf, owner, servicesState, text, tree } from './runtime.js';

describe('chown-mode container through the gateway', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let o: LifecycleOptions;
  let c: ChownContainer;
  let imageBefore: string[];

  beforeAll(async () => {
    sys = await startSystem({ args: { gateway: ['--disable-ovfs-on-idmapped-mount'] } });
    client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    o = { client: () => client, overlay2, image: await buildImage(overlay2, 'img'), workload: true };
    imageBefore = (await Promise.all(o.image.lowers.map((l) => tree(l)))).flat();
    c = await newChownContainer(o, 'syscont-1');
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  const clonePaths = () => {
    const base = join(sys.dataRoot, 'rootfs', c.id, 'overlay2');
    return { merged: join(base, 'merged'), diff: join(base, 'diff'), work: join(base, 'work') };
  };

  it('create: subids, a metacopy clone stacked on the rootfs, chowned; volumes synced in and owned by the container', async () => {
    showLogs();
    await runStep(o, c, 'create');
    const { uid, gid } = c.ids!;
    expect(uid).toBeGreaterThanOrEqual(165536);
    const clone = clonePaths();
    expect(c.cloneRootfs).toBe(clone.merged);
    // The clone: an overlay over the image's layers with its own upper, metacopy on.
    const [cloneMount] = await mountsOf(clone.merged);
    expect(cloneMount?.fsType).toBe('overlay');
    const opts = overlayOptions(cloneMount!.superOptions);
    expect(opts.lowerDirs).toEqual(o.image.lowers);
    expect(opts.upperDir).toBe(clone.diff);
    expect(opts.other).toContain('metacopy=on');
    // Stacked on the original: rootfs, upper and work dirs show the clone.
    expect((await mountsOf(c.rootfs.merged)).length).toBeGreaterThanOrEqual(2);
    expect((await mountsOf(c.rootfs.upper)).length).toBe(1);
    expect((await mountsOf(c.rootfs.work)).length).toBe(1);
    // Chowned by the offset, in the clone only: the image layers keep their owners.
    expect(owner(join(clone.merged, 'etc', 'os-release'))).toBe(`${uid}:${gid}`);
    expect(owner(join(clone.merged, 'home', 'user', 'notes.txt'))).toBe(`${uid + 1000}:${gid + 1000}`);
    expect(owner(join(o.image.lowers[2]!, 'etc', 'os-release'))).toBe('0:0');

    // Volumes: docker 0700 and kubelet, host dirs under the data root, owned by the container's root.
    expect(c.mounts!.slice(0, 2)).toEqual([
      {
        source: join(sys.dataRoot, 'docker', c.id),
        dest: '/var/lib/docker',
        type: 'bind',
        opt: ['rbind', 'rprivate'],
      },
      {
        source: join(sys.dataRoot, 'kubelet', c.id),
        dest: '/var/lib/kubelet',
        type: 'bind',
        opt: ['rbind', 'rprivate'],
      },
    ]);
    const docker = dockerVolume(c);
    expect(statSync(docker).mode & 0o777).toBe(0o700);
    expect(owner(docker)).toBe(`${uid}:${gid}`);
    expect(await text(join(docker, 'image', 'overlay2', 'repositories.json'))).toContain('busybox');
    expect(owner(join(docker, 'image', 'overlay2', 'repositories.json'))).toBe(`${uid}:${gid}`);
    expect(await text(join(sys.dataRoot, 'kubelet', c.id, 'config.yaml'))).toContain('KubeletConfiguration');
    const state = await servicesState(sys);
    expect(state.subid.allocations.map((a) => a.id)).toEqual([c.id]);
    expect(state.vol.volumes.map((v) => `${v.kind}:${v.id}`).sort()).toEqual([
      `docker:${c.id}`,
      `kubelet:${c.id}`,
    ]);
    expect(state.rootfs.clones).toMatchObject([{ id: c.id, chowned: true, mounted: true }]);
  });

  it('pause reverts the clone chown and syncs volumes out into the rootfs upper dir; resume chowns again', async () => {
    showLogs();
    const { uid, gid } = c.ids!;
    await runStep(o, c, 'pause');
    expect(owner(join(clonePaths().merged, 'etc', 'os-release'))).toBe('0:0');
    const synced = join(c.rootfs.upper, 'var', 'lib', 'docker', 'image', 'pulled', 'layer.tar');
    expect(await text(synced)).toBe(`pulled by ${c.id}\n`);
    expect(owner(synced)).toBe('0:0');
    await runStep(o, c, 'resume');
    expect(owner(join(clonePaths().merged, 'etc', 'os-release'))).toBe(`${uid}:${gid}`);
  });

  it('stop: chown reverted, volumes kept and synced out, the clone stays for a restart', async () => {
    showLogs();
    // Written after the pause's sync-out: only the stop's sync-out can carry it.
    const late = join(dockerVolume(c), 'late.txt');
    await writeFile(late, 'written before stop\n');
    await chown(late, c.ids!.uid, c.ids!.gid);
    await runStep(o, c, 'stop');
    expect(await text(join(c.rootfs.upper, 'var', 'lib', 'docker', 'late.txt'))).toBe(
      'written before stop\n',
    );
    expect(owner(join(c.rootfs.upper, 'var', 'lib', 'docker', 'late.txt'))).toBe('0:0');
    expect(owner(join(clonePaths().merged, 'etc', 'os-release'))).toBe('0:0');
    expect(existsSync(dockerVolume(c))).toBe(true);
    const state = await servicesState(sys);
    expect(state.rootfs.clones).toMatchObject([{ id: c.id, chowned: false, mounted: true }]);
    expect(state.subid.allocations.map((a) => a.id)).toEqual([c.id]);
  });

  it('restart: same clone, same mounts, same ids, no new sync-in; then stop again', async () => {
    showLogs();
    const before = await tree(dockerVolume(c));
    await runStep(o, c, 'restart'); // throws on other ids, clone or mounts
    expect(await tree(dockerVolume(c))).toEqual(before);
    expect(owner(join(clonePaths().merged, 'etc', 'os-release'))).toBe(`${c.ids!.uid}:${c.ids!.gid}`);
    await runStep(o, c, 'stop-again');
    expect(owner(join(clonePaths().merged, 'etc', 'os-release'))).toBe('0:0');
  });

  it('remove (Docker unmounts and deletes the dirs): the watch releases volumes, subids and the clone', async () => {
    showLogs();
    await runStep(o, c, 'remove');
    expect(await mountsBelow(sys.dir)).toEqual([]);
    expect(entries(join(sys.dataRoot, 'docker'))).toEqual([]);
    expect(entries(join(sys.dataRoot, 'kubelet'))).toEqual([]);
    expect(existsSync(join(sys.dataRoot, 'rootfs', c.id))).toBe(false);
    const state = await servicesState(sys);
    expect(state.subid.allocations).toEqual([]);
    expect(state.vol.volumes).toEqual([]);
    expect(state.rootfs.clones).toEqual([]);
    expect((await Promise.all(o.image.lowers.map((l) => tree(l)))).flat()).toEqual(imageBefore);
    expect(existsSync(c.rootfs.dir)).toBe(false);
    expect((await rpc(client, 'Register', { id: 'after', rootfs: sys.dir })).containerConfig).toBeDefined();
  });
});
