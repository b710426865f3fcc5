/**
 * Where container rootfs live: the runtimes' own stores. A rootfs elsewhere is someone asking us
 * to clone, chown or sync from an arbitrary host tree.
 */
import { realpath } from 'node:fs/promises';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { isAtOrBelow } from './paths.js';
import type { RootfsRoot } from './runtime-roots.js';

/** sysbox's own store, always allowed; the runtimes' stores come from the host's config (runtime-roots.ts). */
export const SYSBOX_ROOTFS_ROOT: RootfsRoot = { path: '/var/lib/sysbox', source: "sysbox's own store" };

/** The flag that adds roots; named, with its variable, in every refusal. */
export const ROOTS_FLAG = '--allowed-rootfs-roots';
const ROOTS_FLAG_AND_ENV = `${ROOTS_FLAG} (SYSBOX_ALLOWED_ROOTFS_ROOTS)`;

const describe = (r: string | RootfsRoot) => (typeof r === 'string' ? r : `${r.path} (${r.source})`);

/**
 * The realpath of `path` when it lies strictly below the realpath of one of `roots` (roots that
 * do not exist are skipped); undefined when it lies below none. Throws `not-found` when `path`
 * does not exist.
 */
export async function rootfsBelow(
  path: string,
  roots: readonly (string | RootfsRoot)[],
  what = 'rootfs',
): Promise<{ real: string; allowed: boolean }> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new SysboxError('not-found', `${what} ${path} does not exist`);
  }
  for (const root of roots) {
    const realRoot = await realpath(typeof root === 'string' ? root : root.path).catch(() => undefined);
    if (realRoot !== undefined && real !== realRoot && isAtOrBelow(realRoot, real))
      return { real, allowed: true };
  }
  return { real, allowed: false };
}

/** The refusal of a rootfs below none of `roots`: the path, each root in force and its source, the flag. */
export function rootfsRefusal(
  what: string,
  path: string,
  real: string,
  roots: readonly (string | RootfsRoot)[],
  notes: readonly string[] = [],
): SysboxError {
  const shown = real === path ? path : `${path} (resolves to ${real})`;
  const noted = notes.length > 0 ? `; note: ${notes.join('; ')}` : '';
  return new SysboxError(
    'invalid-request',
    `${what} ${shown} is refused: it does not lie below an allowed rootfs root. Roots in force: ${roots.map(describe).join(', ')}${noted}. To allow it, add its store with ${ROOTS_FLAG_AND_ENV}`,
  );
}

/**
 * Throws `invalid-request` unless the realpath of `path` lies strictly below the realpath of one
 * of `roots` (roots that do not exist are skipped). Answers the realpath.
 */
export async function assertRootfsAllowed(
  path: string,
  roots: readonly (string | RootfsRoot)[],
  what = 'rootfs',
): Promise<string> {
  const { real, allowed } = await rootfsBelow(path, roots, what);
  if (!allowed) throw rootfsRefusal(what, path, real, roots);
  return real;
}
