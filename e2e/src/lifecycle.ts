/**
 * sysbox-runc's lifecycle of a chown-mode container with a cloned rootfs, a docker and a kubelet
 * volume, as named steps over the gateway socket (libsysbox's call order), with what the runtime
 * does on the host in between. Scenarios run the steps and assert between them; the crash test
 * kills a daemon between two steps; the bench times whole runs.
 */
import { existsSync } from 'node:fs';
import { chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { status } from '@grpc/grpc-js';
import { run } from '@sysbox-mgr-ts/exec';
import {
  mountContainerRootfs,
  removeLikeDocker,
  unmountAll,
  until,
  type ContainerRootfs,
  type ImageLayers,
} from './runtime.js';

/** Shift types of sysbox-libs' idShiftUtils. */
export const SHIFT = { none: 0, shiftfs: 1, idMapped: 2, idMappedOrShiftfs: 3, chown: 4 } as const;
/** Volume kinds in the proto's MountReqInfo.kind order. */
export const KIND = { docker: 0, kubelet: 1 } as const;

export const VOLUME_REQUESTS = [
  { kind: KIND.docker, dest: '/var/lib/docker' },
  { kind: KIND.kubelet, dest: '/var/lib/kubelet' },
];

export interface ChownContainer {
  id: string;
  rootfs: ContainerRootfs;
  /** Set by create. */
  ids?: { uid: number; gid: number };
  cloneRootfs?: string;
  mounts?: { source: string; dest: string; type: string; opt: string[] }[];
}

export interface LifecycleOptions {
  client: () => SysboxMgrClient;
  overlay2: string;
  image: ImageLayers;
  /** What the container does while running: write into its docker volume (found from its mounts). */
  workload?: boolean;
  /**
   * How long remove waits for the gateway to release the container after Docker deleted its
   * rootfs (default 15 s). A release that meets a JetStream election waits it out (up to 9 s per
   * lost leader on nats-server 2.9), so the cluster scenario allows more.
   */
  releaseWithinMs?: number;
}

export type StepName = 'create' | 'pause' | 'resume' | 'stop' | 'restart' | 'stop-again' | 'remove';
export const STEPS: StepName[] = ['create', 'pause', 'resume', 'stop', 'restart', 'stop-again', 'remove'];

const registerReq = (c: ChownContainer) => ({
  id: c.id,
  rootfs: c.rootfs.merged,
  userns: '',
  netns: '',
  uidMappings: [],
  gidMappings: [],
});

/** Create .. start: Register, SubidAlloc, ReqCloneRootfs, Update, ReqMounts, ReqFsState, ChownClonedRootfs. */
async function startContainer(o: LifecycleOptions, c: ChownContainer, restart: boolean): Promise<void> {
  const client = o.client();
  const reg = await rpc(client, 'Register', registerReq(c));
  if (reg.containerConfig.OverlayfsOnIDMapMountOk)
    throw new Error('gateway not in chown mode: run it with --disable-ovfs-on-idmapped-mount');
  const ids = await rpc<{ uid: number; gid: number }>(client, 'SubidAlloc', { id: c.id, size: 65536 });
  if (restart && (ids.uid !== c.ids!.uid || ids.gid !== c.ids!.gid))
    throw new Error(`restart got new ids ${JSON.stringify(ids)}`);
  c.ids = ids;
  const clone = (await rpc(client, 'ReqCloneRootfs', { id: c.id })).rootfs as string;
  if (restart && clone !== c.cloneRootfs) throw new Error(`restart got another clone ${clone}`);
  c.cloneRootfs = clone;
  const map = [{ containerID: 0, hostID: ids.uid, size: 65536 }];
  const gmap = [{ containerID: 0, hostID: ids.gid, size: 65536 }];
  await rpc(client, 'Update', {
    id: c.id,
    userns: '',
    netns: '',
    uidMappings: map,
    gidMappings: gmap,
    rootfsUidShiftType: SHIFT.chown,
  });
  const mounts = (
    await rpc(client, 'ReqMounts', { id: c.id, rootfsUidShiftType: SHIFT.chown, reqList: VOLUME_REQUESTS })
  ).mounts;
  if (restart && JSON.stringify(mounts) !== JSON.stringify(c.mounts))
    throw new Error(`restart got other mounts ${JSON.stringify(mounts)}`);
  c.mounts = mounts;
  await rpc(client, 'ReqFsState', { id: c.id, rootfs: clone });
  await rpc(client, 'ChownClonedRootfs', { id: c.id, uidOffset: ids.uid, gidOffset: ids.gid });
  if (o.workload && !restart) {
    // The inner Docker pulls an image: a new file in its store, owned by the container's root.
    const vol = dockerVolume(c);
    await mkdir(join(vol, 'image', 'pulled'), { recursive: true });
    await writeFile(join(vol, 'image', 'pulled', 'layer.tar'), `pulled by ${c.id}\n`);
    await chown(join(vol, 'image', 'pulled'), ids.uid, ids.gid);
    await chown(join(vol, 'image', 'pulled', 'layer.tar'), ids.uid, ids.gid);
  }
}

/** Stop: runc's Destroy reverts the clone's chown, then Unregister; the runtime unmounts the rootfs. */
async function stopContainer(
  o: LifecycleOptions,
  c: ChownContainer,
  runtimeUnmounts: boolean,
): Promise<void> {
  const client = o.client();
  await rpc(client, 'RevertClonedRootfsChown', { id: c.id });
  await rpc(client, 'Unregister', { id: c.id });
  // Docker unmounts the rootfs it mounted on stop: the top of the stack, the clone's bind-to-self.
  if (runtimeUnmounts) await run('umount', [c.rootfs.merged], { timeout: 10_000 });
}

export function dockerVolume(c: ChownContainer): string {
  const m = c.mounts?.find((x) => x.dest === '/var/lib/docker');
  if (!m) throw new Error(`container ${c.id} has no docker volume`);
  return m.source;
}

export async function newChownContainer(o: LifecycleOptions, id: string): Promise<ChownContainer> {
  return { id, rootfs: await mountContainerRootfs(o.overlay2, id, o.image) };
}

export async function runStep(o: LifecycleOptions, c: ChownContainer, step: StepName): Promise<void> {
  switch (step) {
    case 'create':
      return startContainer(o, c, false);
    case 'pause':
      await rpc(o.client(), 'Pause', { id: c.id });
      return;
    case 'resume':
      await rpc(o.client(), 'Resume', { id: c.id });
      return;
    case 'stop':
      return stopContainer(o, c, true);
    case 'stop-again':
      // The restart mounted nothing (see 'restart'), so the runtime has nothing to unmount.
      return stopContainer(o, c, false);
    case 'restart':
      // Docker's overlay2 driver would mount the original overlay again here, but its upper and
      // work dirs are now separate binds of the clone's (the kernel refuses: "workdir and upperdir
      // must reside under the same mount"; upstream's cloner stacks them the same way). What is
      // left of the stack after stop, the clone's bind on the rootfs, is what the runtime uses.
      return startContainer(o, c, true);
    case 'remove':
      await removeLikeDocker(c.rootfs, async () => {
        await until(
          `release of ${c.id}`,
          async () => (await statusOf(rpc(o.client(), 'Pause', { id: c.id })))?.code === status.NOT_FOUND,
          o.releaseWithinMs,
        );
      });
      return;
  }
}

/** The gateway has released the container: its record is gone (Pause answers NOT_FOUND). */
export async function released(client: SysboxMgrClient, id: string): Promise<boolean> {
  return (
    (await rpc(client, 'Pause', { id }, 5000).then(
      () => 0,
      (e: { code?: number }) => e.code ?? -1,
    )) === status.NOT_FOUND
  );
}

/**
 * The runtime after a failed start or stop, as Docker does it: Unregister (retried while the
 * gateway is down), unmount and delete the rootfs; what the clone's stack keeps busy is deleted
 * once the gateway released the container. Answers whether the rootfs dir is gone: when the
 * release takes longer than this waits, the caller deletes it later, as Docker retries a removal.
 */
export async function cleanUpLikeARuntime(
  client: () => SysboxMgrClient,
  c: ChownContainer,
): Promise<boolean> {
  for (let attempt = 0; attempt < 40; attempt++) {
    const code = await rpc(client(), 'Unregister', { id: c.id }, 10_000).then(
      () => 0,
      (err: { code?: number }) => err.code ?? -1,
    );
    // OK; NOT_FOUND: never registered or already gone; FAILED_PRECONDITION: already unregistered.
    if (code === 0 || code === 5 || code === 9) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  await unmountAll(c.rootfs.merged).catch(() => undefined);
  await run('rm', ['-rf', c.rootfs.dir], { timeout: 30_000, okExitCodes: [1] }).catch(() => undefined);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !(await released(client(), c.id)))
    await new Promise((r) => setTimeout(r, 250));
  await run('rm', ['-rf', c.rootfs.dir], { timeout: 30_000, okExitCodes: [1] }).catch(() => undefined);
  return !existsSync(c.rootfs.dir);
}
