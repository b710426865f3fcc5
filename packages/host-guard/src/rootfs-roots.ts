/**
 * Where container rootfs live: the runtimes' own stores. A rootfs elsewhere is someone asking us
 * to clone, chown or sync from an arbitrary host tree.
 */
import { realpath } from 'node:fs/promises';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { isAtOrBelow } from './paths.js';

/** Docker, containerd, podman / CRI-O, k3s / rke2 and sysbox's own stores; the data root is added at start. */
export const DEFAULT_ROOTFS_ROOTS: readonly string[] = [
  '/var/lib/docker',
  '/var/lib/containerd',
  '/run/containerd',
  '/var/lib/containers',
  '/run/containers',
  '/var/lib/rancher',
  '/var/lib/sysbox',
];

/**
 * Throws `invalid-request` unless the realpath of `path` lies strictly below the realpath of one
 * of `roots` (roots that do not exist are skipped). Answers the realpath.
 */
export async function assertRootfsAllowed(
  path: string,
  roots: readonly string[],
  what = 'rootfs',
): Promise<string> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new SysboxError('not-found', `${what} ${path} does not exist`);
  }
  for (const root of roots) {
    const realRoot = await realpath(root).catch(() => undefined);
    if (realRoot !== undefined && real !== realRoot && isAtOrBelow(realRoot, real)) return real;
  }
  const shown = real === path ? path : `${path} (resolves to ${real})`;
  throw new SysboxError(
    'invalid-request',
    `${what} ${shown} is refused: it does not lie below an allowed rootfs root (${roots.join(', ')}; see --allowed-rootfs-roots)`,
  );
}
