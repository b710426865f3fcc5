/**
 * Path guards. Ids and paths arrive validated by the contracts, but a container controls the
 * content of its own rootfs (it can plant symlinks), so every path this service creates, removes
 * or writes into is checked again here against the directory it must stay inside.
 */
import { chmod, chown, lstat, mkdir, readlink, realpath, stat, statfs } from 'node:fs/promises';
import { join, posix, relative, sep, isAbsolute } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';

/** True when `path` is `base` or below it, comparing normalized strings. */
export function isUnder(base: string, path: string): boolean {
  const rel = relative(base, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel) && rel.split(sep)[0] !== '..');
}

/** Throws `invalid-request` unless `path` lies strictly below `base` (lexically). */
export function assertStrictlyUnder(base: string, path: string, what: string): void {
  if (path === base || !isUnder(base, path)) {
    throw new SysboxError('invalid-request', `${what} ${path} is not below ${base}`);
  }
}

/** Symlinks followed in one resolution before it is refused (Linux's own limit, ELOOP). */
const MAX_SYMLINKS = 40;

/**
 * A container path as the container sees it: every symlink in it resolved within `root`, an
 * absolute link target taken from `root` and `..` never climbing above it (what sysbox-runc, through
 * runc's securejoin, does with a mount destination). Answers the container path with no symlink
 * in its existing part, e.g. `/var/lib/docker` -> `/data/docker` when the image links the one to
 * the other; a missing tail is kept as spelled. Nothing is read outside `root`.
 */
export async function resolveInRoot(root: string, containerPath: string): Promise<string> {
  const pending = containerPath.split('/').filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const hostPath = join(root, ...done, part);
    const st = await lstat(hostPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
      throw err;
    });
    if (!st?.isSymbolicLink()) {
      done.push(part);
      if (st === undefined) return posix.join('/', ...done, ...pending);
      continue;
    }
    if (++links > MAX_SYMLINKS)
      throw new SysboxError('invalid-request', `${containerPath} in ${root}: too many levels of symlinks`);
    const target = await readlink(hostPath);
    if (target.startsWith('/')) done.length = 0;
    pending.unshift(...target.split('/').filter(Boolean));
  }
  return `/${done.join('/')}`;
}

/**
 * Joins a container path onto a host dir and checks that the result, with every symlink
 * resolved, still lies under that dir. Missing tails are fine (resolved as far as they exist).
 */
export async function resolveInside(base: string, containerPath: string, what: string): Promise<string> {
  const joined = join(base, containerPath);
  assertStrictlyUnder(base, joined, what);
  const realBase = await realpath(base);
  const real = await realpathOfExistingPrefix(joined);
  const expected = join(realBase, relative(base, real.existing));
  if (real.resolved !== expected || !isUnder(realBase, real.resolved)) {
    throw new SysboxError(
      'invalid-request',
      `${what} ${joined} resolves outside ${base} (a symlink in the way)`,
    );
  }
  return joined;
}

async function realpathOfExistingPrefix(path: string): Promise<{ existing: string; resolved: string }> {
  let existing = path;
  for (;;) {
    try {
      return { existing, resolved: await realpath(existing) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const parent = join(existing, '..');
      if (parent === existing) throw err;
      existing = parent;
    }
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Creates `base/rel` one component at a time, never through a symlink. A missing parent takes
 * the mode and owner of its counterpart under `modelBase` when there is one (so a dir made in an
 * overlay upper layer does not mask the lower layer's permissions), else 0755 root; the last
 * component gets `perm`.
 */
export async function mkdirChainInside(
  base: string,
  rel: string,
  perm: number,
  modelBase?: string,
): Promise<void> {
  const parts = rel.split('/').filter(Boolean);
  let cur = base;
  for (let i = 0; i < parts.length; i++) {
    cur = join(cur, parts[i]!);
    let st;
    try {
      st = await lstat(cur);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (st) {
      if (!st.isDirectory())
        throw new SysboxError('invalid-request', `${cur} is not a directory (a symlink or file in the way)`);
      continue;
    }
    const last = i === parts.length - 1;
    const model =
      !last && modelBase
        ? await stat(join(modelBase, ...parts.slice(0, i + 1))).catch(() => undefined)
        : undefined;
    await mkdir(cur);
    await chmod(cur, last ? perm : (model?.mode ?? 0o755) & 0o7777);
    if (model) await chown(cur, model.uid, model.gid);
  }
}

/** Filesystems an inner store's host dir cannot be on: the inner Docker or kubelet mounts overlayfs over it. */
const UNSUPPORTED_FS: Record<string, number> = {
  tmpfs: 0x01021994,
  overlayfs: 0x794c7630,
  shiftfs: 0x6a656a62,
};

/**
 * The data root as upstream's manager leaves it: 0710 root:root (sysbox-runc, as root, walks into
 * it; nobody else may list it). Refuses, with a typed error naming the filesystem, a data root
 * whose volumes would sit on tmpfs, overlayfs or shiftfs, as upstream refuses its docker and
 * kubelet host dirs there.
 */
export async function prepareDataRoot(dataRoot: string): Promise<void> {
  await mkdir(dataRoot, { recursive: true, mode: 0o710 });
  const { type } = await statfs(dataRoot);
  const fs = Object.entries(UNSUPPORTED_FS).find(([, magic]) => magic === type)?.[0];
  if (fs) {
    throw new SysboxError(
      'failed-precondition',
      `data root ${dataRoot} is on ${fs}: inner Docker and kubelet cannot use volumes there; put it on a disk filesystem`,
    );
  }
  await chown(dataRoot, 0, 0);
  await chmod(dataRoot, 0o710);
}
