/** A kind's host dir and the volume dirs under it: derived from the id, never from a record. */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SysboxError, VOLUME_LAYOUT, type VolumeKind } from '@sysbox-mgr-ts/contracts';
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

  const removeVolDir = async (path: string): Promise<void> => {
    assertStrictlyUnder(hostDir, path, 'volume path');
    await rm(path, { recursive: true, force: true });
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
