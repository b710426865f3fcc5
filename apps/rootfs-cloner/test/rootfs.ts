/**
 * Test support: an overlay rootfs built like a runtime's (containerd-style snapshot dirs, several
 * lower layers with files and hard links, an upper and a work dir), and mount cleanup.
 */
import { chmod, chown, lchown, link, lstat, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '@sysbox-mgr-ts/exec';
import { createHostGuard, type HostGuard } from '@sysbox-mgr-ts/host-guard';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';

/**
 * A guard with its own delegation (16 ranges of 65536 ids from `firstId`) and `base` as the only
 * rootfs root, so the tests never depend on the host's /etc/subuid.
 */
export async function testGuard(base: string, dataRoot: string, firstId = 165536): Promise<HostGuard> {
  const subid = join(base, 'subid');
  await writeFile(subid, `sysbox:${firstId}:${16 * 65536}\n`);
  return createHostGuard({ dataRoot, allowedRootfsRoots: [base], subuidFile: subid, subgidFile: subid });
}

export interface RuntimeRootfs {
  snapshots: string;
  lowerDirs: string[];
  upperDir: string;
  workDir: string;
  rootfs: string;
  /** Groups of names (relative to the rootfs) that are one hard-linked lower file. */
  hardLinks: string[][];
  /** One file from each lower layer, relative to the rootfs. */
  layerFiles: string[];
}

/** Lower layers: 1 (bottom) to 3 (top); files in each, hard links in two, a non-root owner. */
export async function buildRuntimeRootfs(
  base: string,
  opts: { relativeLowerDirs?: boolean } = {},
): Promise<RuntimeRootfs> {
  const snapshots = join(base, 'snapshots');
  const layer = (n: number) => join(snapshots, String(n), 'fs');
  for (const n of [1, 2, 3, 4]) await mkdir(layer(n), { recursive: true });
  const workDir = join(snapshots, '4', 'work');
  await mkdir(workDir);

  await mkdir(join(layer(1), 'etc'));
  await writeFile(join(layer(1), 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
  await mkdir(join(layer(1), 'bin'));
  await writeFile(join(layer(1), 'bin', 'tool'), '#!/bin/sh\n');
  await chmod(join(layer(1), 'bin', 'tool'), 0o755);
  await mkdir(join(layer(1), 'hl'));
  await writeFile(join(layer(1), 'hl', 'a'), 'linked\n');
  await link(join(layer(1), 'hl', 'a'), join(layer(1), 'hl', 'b'));
  await link(join(layer(1), 'hl', 'a'), join(layer(1), 'etc', 'c'));

  await mkdir(join(layer(2), 'usr', 'lib'), { recursive: true });
  await writeFile(join(layer(2), 'usr', 'lib', 'lib2.so'), 'elf\n');
  await symlink('usr/lib', join(layer(2), 'lib'));
  await mkdir(join(layer(2), 'home', 'user'), { recursive: true });
  await writeFile(join(layer(2), 'home', 'user', 'notes'), 'mine\n');
  await chown(join(layer(2), 'home', 'user'), 1000, 1000);
  await chown(join(layer(2), 'home', 'user', 'notes'), 1000, 1000);
  await writeFile(join(layer(2), 'usr', 'one'), 'one\n');
  await link(join(layer(2), 'usr', 'one'), join(layer(2), 'usr', 'two'));

  await mkdir(join(layer(3), 'opt', 'app'), { recursive: true });
  await writeFile(join(layer(3), 'opt', 'app', 'file3'), 'three\n');

  const rootfs = join(base, 'containers', 'c', 'rootfs');
  await mkdir(rootfs, { recursive: true });
  const lowerDirs = [3, 2, 1].map(layer);
  const lowerOpt = opts.relativeLowerDirs ? '3/fs:2/fs:1/fs' : lowerDirs.join(':');
  await run(
    'mount',
    [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lowerOpt},upperdir=${layer(4)},workdir=${workDir}`,
      rootfs,
    ],
    {
      timeout: 10_000,
      cwd: snapshots,
    },
  );
  return {
    snapshots,
    lowerDirs,
    upperDir: layer(4),
    workDir,
    rootfs,
    hardLinks: [
      ['hl/a', 'hl/b', 'etc/c'],
      ['usr/one', 'usr/two'],
    ],
    layerFiles: ['etc/passwd', 'usr/lib/lib2.so', 'opt/app/file3'],
  };
}

/** Unmounts everything at or under `dir`, deepest first, until nothing is left. */
export async function unmountAllUnder(dir: string): Promise<void> {
  for (let round = 0; round < 10; round++) {
    const mounts = mountsUnder(await readMountInfo(), dir);
    if (mounts.length === 0) return;
    for (const m of mounts)
      await run('umount', ['-l', m.mountPoint], { timeout: 10_000 }).catch(() => undefined);
  }
}

/** Every entry under `root` (not crossing into other mounts' content differences) with its owner. */
export async function owners(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const st = await lstat(join(root, rel));
    out.set(rel || '.', `${st.uid}:${st.gid}`);
    if (st.isDirectory())
      for (const name of await readdir(join(root, rel))) await walk(rel ? `${rel}/${name}` : name);
  };
  await walk('');
  return out;
}

/**
 * A minimal shifter with id-shift's hard-link rule (each inode shifted once, by dev:ino), used
 * where a test needs that rule in isolation.
 */
export async function shiftOncePerInode(
  root: string,
  uidOffset: number,
  gidOffset: number,
): Promise<{ entries: number; ms: number }> {
  const seen = new Set<string>();
  let entries = 0;
  const t0 = performance.now();
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path);
    entries++;
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      await lchown(path, st.uid + uidOffset, st.gid + gidOffset);
    }
    if (st.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(root);
  return { entries, ms: performance.now() - t0 };
}
