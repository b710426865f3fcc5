/** Markpoints: their record keys, whether shiftfs is mounted there, their dirs under the work dir. */
import { createHash } from 'node:crypto';
import { mkdir, realpath, rmdir } from 'node:fs/promises';
import { mountsAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';

/** Record key of a source: a hash, because a 4096-byte path escaped into a subject is too long. */
export function markKey(source: string): string {
  return createHash('sha256').update(source).digest('hex').slice(0, 40);
}

export function hasShiftfsAt(mounts: readonly MountEntry[], path: string): boolean {
  return mountsAt(mounts, path).some((m) => m.fsType === 'shiftfs');
}

export async function removeMarkpointDir(path: string): Promise<void> {
  try {
    // rmdir, never a recursive delete: if the mark were still mounted this fails instead of
    // deleting the source's files through it.
    await rmdir(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Makes `<data-root>/shiftfs` (0710) if missing; answers its real path, resolved once because
 * markpoints are stored as mountinfo shows them.
 */
export async function makeWorkDir(path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: 0o710 });
  return realpath(path);
}

/** The name of a markpoint dir we make: a random uuid. */
export const UUID_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
