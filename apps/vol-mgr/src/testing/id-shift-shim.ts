// TEMPORARY until packages/id-shift lands.
import { lstat, readdir, lchown } from 'node:fs/promises';
import { join } from 'node:path';
export async function scanIds(root: string) {
  const u = new Set<number>(), g = new Set<number>(); let entries = 0;
  const walk = async (p: string): Promise<void> => { const st = await lstat(p); entries++; u.add(st.uid); g.add(st.gid); if (st.isDirectory()) for (const n of await readdir(p)) await walk(join(p, n)); };
  await walk(root);
  return { uids: [...u].sort((a, b) => a - b), gids: [...g].sort((a, b) => a - b), entries };
}
export async function needsShift(source: string, uid: number, gid: number) { const st = await lstat(source); return st.uid !== uid || st.gid !== gid; }
export async function shift(root: string, uo: number, go: number) {
  const { chmod } = await import('node:fs/promises');
  const walk = async (p: string): Promise<void> => { const st = await lstat(p); await lchown(p, st.uid + uo, st.gid + go); if (!st.isSymbolicLink() && (st.mode & 0o6000)) await chmod(p, st.mode & 0o7777); if (st.isDirectory()) for (const n of await readdir(p)) await walk(join(p, n)); };
  await walk(root); return { entries: 0, ms: 0 };
}
