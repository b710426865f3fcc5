/**
 * What KV holds of a clone and of an upper-dir shift, and the checks a record read back must pass:
 * KV can be written by others, so a record's paths are used only when they are the ones derived
 * from its container id.
 */
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { bootOf } from '@sysbox-mgr-ts/kv-state';
import { overlayOptions } from '@sysbox-mgr-ts/mountinfo';
import type { Logger } from '@sysbox-mgr-ts/service-kit';

export const CLONER_DIR = 'rootfs';

export const CloneRecord = z.object({
  id: z.string(),
  origRootfs: z.string(),
  cloneDir: z.string(),
  mergedDir: z.string(),
  diffDir: z.string(),
  workDir: z.string(),
  origUpperDir: z.string(),
  origWorkDir: z.string(),
  lowerDirs: z.array(z.string()),
  mountOptions: z.string(),
  cwd: z.string().optional(),
  propagation: z.enum(['shared', 'slave', 'private', 'unbindable']),
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  chowned: z.boolean(),
  bindToSelfActive: z.boolean(),
  /**
   * An operation that started and has not finished: a daemon killed mid-way left it. A pending
   * chown or revert means the clone's entries lie partly at their original owners and partly at
   * original + offset; the next chown-clone or revert-chown (or the next start) finishes it.
   */
  pending: z.enum(['create', 'chown', 'revert']).optional(),
  /** The kernel boot id of the boot that mounted it (none from older versions: taken for this boot). */
  boot: z.string().optional(),
  createdAt: z.string(),
});
export type CloneRecord = z.infer<typeof CloneRecord>;

export const UpperRecord = z.object({
  id: z.string(),
  upperDir: z.string(),
  uidOffset: z.number().int(),
  gidOffset: z.number().int(),
  shifted: z.boolean(),
  /** As a clone's pending chown/revert: the dir is partly shifted until a retry or the next start finishes it. */
  pending: z.enum(['shift', 'revert']).optional(),
});
export type UpperRecord = z.infer<typeof UpperRecord>;

/**
 * What start-up does with a clone record: a clone of an earlier boot is removed (its mounts are
 * gone and its container no longer runs; its dirs are deleted), an unstamped one (an older
 * version's) is stamped with this boot and reconciled, a clone of this boot is reconciled
 * (adopted, or re-established when its mounts were lifted without a reboot).
 */
export function cloneAtStart(
  rec: Pick<CloneRecord, 'boot'>,
  bootId: string,
): 'remove' | 'stamp' | 'reconcile' {
  const of = bootOf(rec.boot, bootId);
  return of === 'earlier-boot' ? 'remove' : of === 'unstamped' ? 'stamp' : 'reconcile';
}

/** Where a container's clone lives: derived from the id alone, never read from a record. */
export function cloneDirsOf(dataRoot: string, id: string) {
  const cloneDir = join(dataRoot, CLONER_DIR, id);
  if (dirname(cloneDir) !== join(dataRoot, CLONER_DIR))
    throw new SysboxError('invalid-request', `container id ${id} is not a single path token`);
  return {
    cloneDir,
    mergedDir: join(cloneDir, 'overlay2', 'merged'),
    diffDir: join(cloneDir, 'overlay2', 'diff'),
    workDir: join(cloneDir, 'overlay2', 'work'),
  };
}

/**
 * KV can be written by others: a record is used only when its clone dirs (and the upper and
 * work dirs its mount options name) are the derived ones, so a forged record cannot make us
 * rm -rf, unmount or mount over a path of its choosing.
 */
export function checkRecord(dataRoot: string, log: Logger, id: string, rec: CloneRecord): CloneRecord {
  const want = { id, ...cloneDirsOf(dataRoot, id) };
  const opts = overlayOptions(rec.mountOptions.split(/(?<!\\),/));
  const unescaped = (v: string | undefined) => v?.replace(/\\(.)/g, '$1');
  const got = {
    id: rec.id,
    cloneDir: rec.cloneDir,
    mergedDir: rec.mergedDir,
    diffDir: rec.diffDir,
    workDir: rec.workDir,
  };
  const bad = Object.entries(want).filter(([k, v]) => got[k as keyof typeof got] !== v);
  if (unescaped(opts.upperDir) !== want.diffDir) bad.push(['upperdir', want.diffDir]);
  if (unescaped(opts.workDir) !== want.workDir) bad.push(['workdir', want.workDir]);
  if (bad.length > 0) {
    log.error(
      { id, record: rec, mismatched: bad.map(([k]) => k) },
      'clone record does not match the dirs derived from its id: refused',
    );
    throw new SysboxError(
      'internal',
      `record of clone ${id} names foreign paths (${bad.map(([k, v]) => `${k} should be ${v}`).join(', ')}): refusing to use it`,
    );
  }
  return rec;
}
