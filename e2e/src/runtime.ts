/**
 * What a container runtime (Docker's overlay2 driver) does on the host around sysbox-runc's calls:
 * image layers, a container's overlay rootfs, its unmount and removal; plus readers of host state
 * the scenarios assert on.
 */
import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { chown, lchown, lstat, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rootfsList, shiftfsList, subidList, volList } from '@sysbox-mgr-ts/contracts';
import { run } from '@sysbox-mgr-ts/exec';
import { mountsAt, mountsUnder, readMountInfo, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import { errorFromReply } from '@sysbox-mgr-ts/service-kit';
import type { System } from './harness.js';
import { sleep } from './harness.js';

export interface ImageLayers {
  /** Layer diff dirs, top first (overlay's lowerdir order). */
  lowers: string[];
}

/**
 * Three image layers like a system-container image's: a base (a user's home owned by 1000:1000),
 * an inner Docker's store (/var/lib/docker, 0700, owned by root), and kubelet state; plus
 * `extraEntries` files spread over a few dirs of the base layer (`extraIn: 'base'`), or of the
 * inner Docker's store (`'inner-docker'`: a preloaded inner image, which the docker volume's
 * sync-in and sync-out move).
 */
export async function buildImage(
  overlay2: string,
  name: string,
  extraEntries = 0,
  extraIn: 'base' | 'inner-docker' = 'base',
): Promise<ImageLayers> {
  const base = join(overlay2, `${name}-l1`, 'diff');
  const dockerLayer = join(overlay2, `${name}-l2`, 'diff');
  const kubeLayer = join(overlay2, `${name}-l3`, 'diff');
  const extraRoot =
    extraIn === 'base'
      ? join(base, 'usr', 'share')
      : join(dockerLayer, 'var', 'lib', 'docker', 'overlay2', 'preloaded', 'diff');
  await mkdir(join(base, 'etc'), { recursive: true });
  await writeFile(join(base, 'etc', 'os-release'), 'ID=debian\nVERSION_ID="12"\n');
  await mkdir(join(base, 'home', 'user'), { recursive: true });
  await writeFile(join(base, 'home', 'user', 'notes.txt'), 'user file\n');
  await chown(join(base, 'home', 'user'), 1000, 1000);
  await chown(join(base, 'home', 'user', 'notes.txt'), 1000, 1000);
  for (let d = 0; extraEntries > 0 && d < Math.ceil(extraEntries / 500); d++) {
    const dir = join(extraRoot, `pkg${d}`);
    await mkdir(dir, { recursive: true });
    const n = Math.min(500, extraEntries - d * 500);
    await Promise.all(Array.from({ length: n }, (_, i) => writeFile(join(dir, `f${i}`), `${d}/${i}\n`)));
  }
  const innerDocker = join(dockerLayer, 'var', 'lib', 'docker');
  await mkdir(join(innerDocker, 'image', 'overlay2'), { recursive: true, mode: 0o700 });
  await run('chmod', ['0700', innerDocker], { timeout: 5000 });
  await writeFile(
    join(innerDocker, 'image', 'overlay2', 'repositories.json'),
    '{"Repositories":{"busybox":{}}}\n',
  );
  await mkdir(join(innerDocker, 'volumes'), { recursive: true });
  await writeFile(join(innerDocker, 'volumes', 'metadata.db'), 'preloaded inner image metadata\n');
  const kubelet = join(kubeLayer, 'var', 'lib', 'kubelet');
  await mkdir(kubelet, { recursive: true });
  await writeFile(join(kubelet, 'config.yaml'), 'kind: KubeletConfiguration\n');
  return { lowers: [kubeLayer, dockerLayer, base] };
}

export interface ContainerRootfs {
  /** `<overlay2>/<id>`: what the runtime deletes on removal. */
  dir: string;
  merged: string;
  upper: string;
  work: string;
}

/** A container layer over the image, mounted at `<overlay2>/<id>/merged` as Docker mounts it. */
export async function mountContainerRootfs(
  overlay2: string,
  id: string,
  image: ImageLayers,
): Promise<ContainerRootfs> {
  const dir = join(overlay2, id);
  const r: ContainerRootfs = {
    dir,
    merged: join(dir, 'merged'),
    upper: join(dir, 'diff'),
    work: join(dir, 'work'),
  };
  for (const d of [r.merged, r.upper, r.work]) await mkdir(d, { recursive: true });
  await run(
    'mount',
    [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${image.lowers.join(':')},upperdir=${r.upper},workdir=${r.work}`,
      r.merged,
    ],
    { timeout: 10_000 },
  );
  return r;
}

/** runc's chown of an upper dir: every entry shifted by the offset, symlinks not followed. */
export async function shiftTree(dir: string, offset: number): Promise<void> {
  const s = await lstat(dir);
  await lchown(dir, s.uid + offset, s.gid + offset);
  if (s.isDirectory()) for (const e of await readdir(dir)) await shiftTree(join(dir, e), offset);
}

/** Unmounts every mount stacked on `path`, top first (a runtime's unmount of a rootfs). */
export async function unmountAll(path: string): Promise<void> {
  while (mountsAt(await readMountInfo(), path).length > 0) await run('umount', [path], { timeout: 10_000 });
}

/**
 * Docker's `docker rm`: unmount the rootfs, delete the container's dir. Mount points that
 * still hold the clone's binds cannot be deleted until the manager releases them, so, like
 * Docker's retry, the leftover is deleted after `released` resolves.
 */
export async function removeLikeDocker(c: ContainerRootfs, released: () => Promise<void>): Promise<void> {
  await unmountAll(c.merged);
  await run('rm', ['-rf', c.dir], { timeout: 30_000, okExitCodes: [1] });
  await released();
  await rm(c.dir, { recursive: true, force: true });
}

export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(25);
  }
}

export async function mountsOf(path: string): Promise<MountEntry[]> {
  return mountsAt(await readMountInfo(), path);
}

export async function mountsBelow(dir: string): Promise<string[]> {
  return mountsUnder(await readMountInfo(), dir).map((m) => m.mountPoint);
}

export function owner(path: string): string {
  const s = lstatSync(path);
  return `${s.uid}:${s.gid}`;
}

/** Entries of a dir, sorted ([] when it does not exist). */
export function entries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export async function text(path: string): Promise<string> {
  return readFile(path, 'utf8');
}

/** Each service's own view (its `list` endpoint), as an operator would read it. */
export async function servicesState(sys: System) {
  const ask = async <T>(subject: string, payload: object = {}): Promise<T> => {
    const reply = await sys.nc.request(subject, JSON.stringify(payload), { timeout: 30_000 });
    // An error answer (the service's $SRV error headers) is not a list.
    const error = errorFromReply(reply.data, reply.headers);
    if (error) throw new Error(`${subject}: ${error.code} ${error.message}`);
    return reply.json<T>();
  };
  const subid = await ask<{ allocations: { id: string; uid: number; gid: number }[] }>(
    subidList.subject(sys.node),
  );
  const vol = await ask<{
    volumes: { id: string; kind: string; path: string }[];
    preps: { source: string; holders: string[] }[];
  }>(volList.subject(sys.node));
  const rootfs = await ask<{
    clones: { id: string; chowned: boolean; mounted: boolean }[];
    uppers: { id: string }[];
  }>(rootfsList.subject(sys.node));
  const shiftfs = await ask<{ supported: boolean; marks: unknown[] }>(shiftfsList.subject(sys.node));
  return { subid, vol, rootfs, shiftfs };
}

/** Every path under `dir` (relative), for a before/after comparison of a tree. */
export async function tree(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const r = await run('find', [dir, '-mindepth', '1', '-printf', '%P %U:%G %m\\n'], { timeout: 30_000 });
  return r.stdout.split('\n').filter(Boolean).sort();
}
