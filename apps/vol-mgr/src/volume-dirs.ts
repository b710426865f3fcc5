/** A kind's host dir and the volume dirs under it: derived from the id, never from a record. */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SysboxError, VOLUME_LAYOUT, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { run } from '@sysbox-mgr-ts/exec/run';
import type { Logger } from 'pino';
import { assertStrictlyUnder, mkdirChainInside, resolveInside } from './paths.js';
import type { VolumeRecord } from './volumes.js';

export interface VolumeDirs {
  hostDir: string;
  volPathOf(id: string): string;
  ensureHostDir(): Promise<void>;
  removeVolDir(path: string): Promise<void>;
  /** A record's path is only trusted when it is the one derived from the id: KV can be written by others. */
  checkRecordPath(rec: VolumeRecord, log: Logger): string;
}

/** A volume of millions of entries on a slow disk still goes within this; past it the removal retries. */
const REMOVE_TIMEOUT_MS = 30 * 60_000;

export function volumeDirs(deps: { dataRoot: string; kind: VolumeKind }): VolumeDirs {
  const layout = VOLUME_LAYOUT[deps.kind];
  const hostDir = join(deps.dataRoot, layout.hostDir);
  assertStrictlyUnder(deps.dataRoot, hostDir, 'volume host dir');
  const volPathOf = (id: string): string => {
    const path = join(hostDir, id);
    // Ids are validated tokens; this catches any that slipped through (`..`, `a/b`).
    if (join(path, '..') !== hostDir)
      throw new SysboxError('invalid-request', `volume id ${id} is not a single path token`);
    assertStrictlyUnder(deps.dataRoot, path, 'volume path');
    return path;
  };

  const ensureHostDir = async (): Promise<void> => {
    await mkdir(deps.dataRoot, { recursive: true });
    await resolveInside(deps.dataRoot, `/${layout.hostDir}`, 'volume host dir');
    // 0700 as upstream: only root walks into a kind's volumes (each volume keeps its own perm).
    await mkdirChainInside(deps.dataRoot, layout.hostDir, 0o700);
  };

  // rm(1), not fs.rm: a volume holds an inner Docker's image store, and fs.rm's walk through
  // libuv's thread pool took 1.7 s for 10,000 entries where rm -rf takes a third of that (the
  // removal step of the lifecycle bench). Same semantics: no symlink followed, a missing path is
  // fine. Killed with this daemon, so a restart's reconcile never races a delete left running.
  const removeVolDir = async (path: string): Promise<void> => {
    assertStrictlyUnder(hostDir, path, 'volume path');
    await run('rm', ['-rf', '--', path], { timeout: REMOVE_TIMEOUT_MS, dieWithParent: true });
  };

  /** A record's path is only trusted when it is the one derived from the id: KV can be written by others. */
  const checkRecordPath = (rec: VolumeRecord, log: Logger): string => {
    const path = volPathOf(rec.id);
    if (rec.path !== path) {
      log.error(
        { kind: deps.kind, id: rec.id, recorded: rec.path, expected: path },
        'volume record names a foreign path: refused',
      );
      throw new SysboxError(
        'internal',
        `record of ${rec.id} names ${rec.path}, not ${path}: refusing to use it`,
      );
    }
    return path;
  };

  return { hostDir, volPathOf, ensureHostDir, removeVolDir, checkRecordPath };
}
