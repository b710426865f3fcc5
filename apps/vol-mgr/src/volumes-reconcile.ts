/**
 * At start: records a crash left half-created are removed with their dir, records whose dir is
 * gone are dropped, and dirs under the host dir that no record owns are reported (and removed
 * with --remove-orphans).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { StateStore } from '@sysbox-mgr-ts/kv-state';
import type { Logger } from 'pino';
import { exists } from './paths.js';
import type { VolumeDirs } from './volume-dirs.js';
import type { ReconcileReport, VolumeRecord } from './volumes.js';

export async function reconcileVolumes(
  deps: { kind: VolumeRecord['kind']; store: StateStore<VolumeRecord>; log: Logger },
  dirs: VolumeDirs,
  removeOrphans: boolean,
): Promise<ReconcileReport> {
  const { ensureHostDir, removeVolDir, volPathOf, hostDir } = dirs;
  await ensureHostDir();
  const report: ReconcileReport = {
    kind: deps.kind,
    kept: [],
    vanished: [],
    unfinished: [],
    orphans: [],
    removedOrphans: [],
  };
  const owned = new Set<string>();
  for (const { value } of await deps.store.list()) {
    if (value.state === 'creating') {
      await removeVolDir(volPathOf(value.id));
      await deps.store.delete(value.id);
      report.unfinished.push(value.id);
    } else if (!(await exists(volPathOf(value.id)))) {
      await deps.store.delete(value.id);
      report.vanished.push(value.id);
    } else {
      owned.add(value.id);
      report.kept.push(value.id);
    }
  }
  for (const name of await readdir(hostDir)) {
    if (owned.has(name)) continue;
    report.orphans.push(name);
    if (removeOrphans) {
      await removeVolDir(join(hostDir, name));
      report.removedOrphans.push(name);
    }
  }
  if (report.vanished.length)
    deps.log.warn({ kind: deps.kind, ids: report.vanished }, 'volumes whose dir vanished: records dropped');
  if (report.unfinished.length)
    deps.log.warn({ kind: deps.kind, ids: report.unfinished }, 'half-created volumes removed');
  if (report.orphans.length) {
    deps.log.warn(
      { kind: deps.kind, dirs: report.orphans.map((n) => join(hostDir, n)), removed: removeOrphans },
      removeOrphans
        ? 'orphan volume dirs removed'
        : 'orphan volume dirs no record owns (--remove-orphans removes them)',
    );
  }
  return report;
}
