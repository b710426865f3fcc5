/**
 * At start: marks whose mount is gone are dropped, claims abandoned by a crashed replica are
 * taken over and torn down, and empty markpoint dirs no record names are removed.
 */
import { readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { MarkRecord } from './mark-store.js';
import type { MarkTeardown } from './mark-teardown.js';
import { UUID_NAME, hasShiftfsAt, removeMarkpointDir } from './markpoints.js';
import type { ReconcileReport } from './marks.js';

export async function reconcileMarks(ctx: {
  store: StateStore<MarkRecord>;
  readMounts: () => Promise<MountEntry[]>;
  workDir: string;
  log: Logger;
  isStale: (rec: MarkRecord) => boolean;
  takeOverAndTeardown: MarkTeardown['takeOverAndTeardown'];
}): Promise<ReconcileReport> {
  const { store, readMounts, workDir, log, isStale, takeOverAndTeardown } = ctx;
  // Order matters with live replicas: a markpoint dir is made only after its record, and a
  // record turns `mounted` only after its mount. So a dir seen before the listing has its
  // record in the listing, and a mount committed before the listing is in mountinfo read after.
  const dirsBefore = await readdir(workDir);
  const records = await store.list();
  const mounts = await readMounts();
  const report: ReconcileReport = { kept: 0, dropped: [], removedDirs: [] };
  for (const { key, value: rec } of records) {
    if (rec.state === 'mounted' && hasShiftfsAt(mounts, rec.markpoint)) {
      report.kept++;
      continue;
    }
    if (rec.state === 'mounted') {
      let removed = false;
      await store.mutate(key, (cur) => {
        removed = cur?.claimId === rec.claimId && cur.state === 'mounted';
        return removed ? REMOVE : undefined;
      });
      if (!removed) continue;
      if (rec.createdMarkpoint) {
        await removeMarkpointDir(rec.markpoint).catch((err: unknown) =>
          log.warn({ err, markpoint: rec.markpoint }, 'markpoint of a dropped mark not removed'),
        );
      }
      const dropped = {
        source: rec.source,
        markpoint: rec.markpoint,
        holders: rec.holders,
        reason: 'mount is gone from mountinfo',
      };
      log.warn(dropped, 'dropped a shiftfs mark whose mount is gone');
      report.dropped.push(dropped);
    } else if (isStale(rec)) {
      if (await takeOverAndTeardown(key, rec, log)) {
        const dropped = {
          source: rec.source,
          markpoint: rec.markpoint,
          holders: rec.holders,
          reason: `abandoned while ${rec.state}`,
        };
        log.warn(dropped, 'tore down an abandoned shiftfs claim');
        report.dropped.push(dropped);
      }
    } else {
      report.kept++;
    }
  }
  // Empty uuid dirs no record names: left by a crash between dropping a record and its rmdir.
  const referenced = new Set(records.map((r) => r.value.markpoint));
  for (const name of dirsBefore.filter((n) => UUID_NAME.test(n))) {
    const path = join(workDir, name);
    if (referenced.has(path) || mountsAt(mounts, path).length > 0) continue;
    try {
      await rmdir(path);
      report.removedDirs.push(path);
    } catch (err) {
      log.warn({ err, path }, 'stray markpoint dir not removed');
    }
  }
  if (report.removedDirs.length > 0) log.warn({ dirs: report.removedDirs }, 'removed stray markpoint dirs');
  return report;
}
