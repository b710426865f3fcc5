/**
 * System directories: a root daemon must never chown, mark, clone or mount over them, whoever
 * asks. Checked on the realpath (a symlink to /etc is /etc) and on device+inode (a bind mount of
 * /etc elsewhere shows the same directory under another name).
 */
import { realpath, stat } from 'node:fs/promises';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { isAtOrBelow, realpathAllowingMissing, selfAndAncestors } from './paths.js';

/** Trees whose every entry belongs to the host: refused at the dir and anywhere below it. */
export const SYSTEM_TREES: readonly string[] = [
  '/etc',
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/boot',
  '/proc',
  '/sys',
  '/dev',
];

/** Our own state: the JetStream store and the NATS credentials. */
export const DEFAULT_STATE_DIRS: readonly string[] = ['/var/lib/sysbox-mgr-ts', '/etc/sysbox-mgr-ts'];

/** Refused as the path itself. Below `/` and `/run` live container rootfs and mount sources. */
export const SYSTEM_DIRS: readonly string[] = ['/', ...SYSTEM_TREES, '/run', ...DEFAULT_STATE_DIRS];

export interface SystemDirContext {
  /** The daemon's data root: it and every parent of it are refused (a shift of them chowns our dirs). */
  dataRoot: string;
  /** The JetStream store dir when it is not the default; refused like the data root, and below. */
  stateDir?: string;
  /** What the path is, for the message: "mount source", "rootfs". */
  what?: string;
}

interface DirIdentity {
  dir: string;
  dev: number;
  ino: number;
}

/** Device and inode of each dir that exists, stat'ed at once (this runs on every guarded request). */
async function identities(dirs: readonly string[]): Promise<DirIdentity[]> {
  const stats = await Promise.all(dirs.map((dir) => stat(dir).catch(() => undefined)));
  return dirs.flatMap((dir, i) => {
    const st = stats[i];
    return st ? [{ dir, dev: st.dev, ino: st.ino }] : [];
  });
}

function refuse(what: string, path: string, real: string, rule: string): never {
  const shown = real === path ? path : `${path} (resolves to ${real})`;
  throw new SysboxError('invalid-request', `${what} ${shown} is refused: ${rule}`);
}

/**
 * Throws `invalid-request` when `path` is a system directory, lies in a system tree, is our
 * state, holds the data root or state dir, or is (or lies below) a bind mount of a system dir.
 * Answers the realpath, which callers use from then on so a swapped symlink cannot redirect them.
 */
export async function assertNotSystemDir(path: string, ctx: SystemDirContext): Promise<string> {
  const what = ctx.what ?? 'path';
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new SysboxError('not-found', `${what} ${path} does not exist`);
  }
  if (SYSTEM_DIRS.includes(real)) refuse(what, path, real, 'it is a system directory');
  const tree = SYSTEM_TREES.find((t) => isAtOrBelow(t, real));
  if (tree) refuse(what, path, real, `it lies in the system tree ${tree}`);

  const stateDirs = ctx.stateDir
    ? [...DEFAULT_STATE_DIRS, await realpathAllowingMissing(ctx.stateDir)]
    : DEFAULT_STATE_DIRS;
  const state = stateDirs.find((s) => isAtOrBelow(s, real));
  if (state) refuse(what, path, real, `it lies in the state dir ${state}`);
  for (const held of [await realpathAllowingMissing(ctx.dataRoot), ...stateDirs]) {
    if (isAtOrBelow(real, held)) refuse(what, path, real, `it is or holds ${held}, which this service owns`);
  }

  // The same directory under another name: compare device and inode, which a bind mount keeps.
  // SYSTEM_DIRS holds every tree: one batch of stats serves both lists.
  const chain = selfAndAncestors(real);
  const [dirIds, chainStats] = await Promise.all([
    identities(SYSTEM_DIRS),
    Promise.all(chain.map((p) => stat(p))).catch((err: NodeJS.ErrnoException) => {
      // Deleted since the realpath above (a runtime removing its rootfs): as if never there.
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR')
        throw new SysboxError('not-found', `${what} ${path} does not exist`);
      throw err;
    }),
  ]);
  const treeIds = dirIds.filter((i) => SYSTEM_TREES.includes(i.dir));
  for (const [k, p] of chain.entries()) {
    const st = chainStats[k]!;
    const same = (i: DirIdentity) => i.dev === st.dev && i.ino === st.ino;
    const hit = treeIds.find(same) ?? (p === real ? dirIds.find(same) : undefined);
    if (hit)
      refuse(what, path, real, `${p === real ? 'it' : p} is a bind mount of the system directory ${hit.dir}`);
  }
  return real;
}
