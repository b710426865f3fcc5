/** Test helpers: a container rootfs as a real overlay mount, and exact snapshots of file trees. */
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@sysbox-mgr-ts/exec';

export interface TreeEntry {
  type: 'dir' | 'file' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  /** File content hash or symlink target. */
  content?: string;
  mtimeMs?: number;
  /** Other paths of the tree sharing this entry's inode (hard links), sorted. */
  links?: string[];
}

/** Every entry under `root` by relative path, with ids shifted by `-idOffset` (to compare shifted trees). */
export async function snapshotTree(root: string, idOffset = 0): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  const byInode = new Map<number, string[]>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel ? join(root, rel) : root;
    const st = await lstat(abs);
    const shiftId = (id: number): number => (id >= idOffset ? id - idOffset : id);
    const e: TreeEntry = {
      type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other',
      mode: st.mode,
      uid: shiftId(st.uid),
      gid: shiftId(st.gid),
    };
    if (st.isFile()) {
      e.content = createHash('sha256')
        .update(await readFile(abs))
        .digest('hex');
      e.mtimeMs = Math.floor(st.mtimeMs / 1000);
      if (st.nlink > 1) byInode.set(st.ino, [...(byInode.get(st.ino) ?? []), rel]);
    }
    if (st.isSymbolicLink()) e.content = await readlink(abs);
    out[rel || '.'] = e;
    if (st.isDirectory())
      for (const name of (await readdir(abs)).sort()) await walk(rel ? `${rel}/${name}` : name);
  };
  await walk('');
  for (const paths of byInode.values()) for (const p of paths) out[p]!.links = [...paths].sort();
  return out;
}

export interface OverlayRootfs {
  base: string;
  lower: string;
  upper: string;
  merged: string;
  cleanup(): Promise<void>;
}

/** mkdtemp dir (in `parent`) with lower/ (filled by `fill`), upper/, work/ and merged/ = a real overlay mount. */
export async function makeOverlayRootfs(
  prefix: string,
  fill: (lower: string) => Promise<void>,
  parent = tmpdir(),
): Promise<OverlayRootfs> {
  const base = await mkdtemp(join(parent, prefix));
  const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(base, d)) as [
    string,
    string,
    string,
    string,
  ];
  for (const d of [lower, upper, work, merged]) await mkdir(d);
  await fill(lower);
  await run(
    'mount',
    ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged],
    { timeout: 10_000 },
  );
  return {
    base,
    lower,
    upper,
    merged,
    async cleanup() {
      await run('umount', ['-l', merged], { timeout: 10_000 }).catch(() => undefined);
      await rm(base, { recursive: true, force: true });
    },
  };
}
