/**
 * Orphan collection: the safety net under the intents. Every scan lists each service's records
 * of this node and releases those whose container the gateway's table does not know, once they
 * have stayed unknown for a grace period (a record made by a call in flight belongs to a
 * container that is in the table already; the grace covers a table read racing a removal). The
 * reverse is repaired too: a running container whose rootfs vanished without an Unregister (the
 * runtime crashed) is unregistered and released like any removed container.
 */
import {
  rootfsList,
  rootfsRemoveClone,
  rootfsRevertUpper,
  shiftfsList,
  shiftfsUnmark,
  subidFree,
  subidList,
  volByKind,
  volList,
  volRevertPrep,
  type VolumeKind,
} from '@sysbox-mgr-ts/contracts';
import { isSysboxError } from '@sysbox-mgr-ts/contracts';
import { allPages, type Logger, type ServiceClient } from '@sysbox-mgr-ts/service-kit';

/** One thing a service holds for a container, and how to give it back. */
interface Holding {
  id: string;
  what: string;
  release(): Promise<unknown>;
}

export interface OrphanReport {
  /** Orphans seen this scan, still in their grace period. */
  waiting: number;
  /** Released this scan: `<what> of <id>`. */
  released: string[];
  /** Running containers whose rootfs vanished, unregistered and released this scan. */
  repaired: string[];
  /** Releases that failed (retried next scan). */
  failed: string[];
}

export interface OrphanCollectorOptions {
  services: ServiceClient;
  /** Whether the container table knows the id (any state). */
  known(id: string): Promise<boolean>;
  /** Running containers with the path whose disappearance means the runtime removed them. */
  running(): Promise<{ id: string; path: string }[]>;
  exists(path: string): Promise<boolean>;
  /** Unregister then release, as the removal watch does. */
  forget(id: string): Promise<void>;
  graceMs: number;
  now?: () => number;
  log: Logger;
}

export interface OrphanCollector {
  scan(): Promise<OrphanReport>;
  /** Scans every `intervalMs` until stop(). */
  start(intervalMs: number): void;
  stop(): Promise<void>;
}

export function createOrphanCollector(opts: OrphanCollectorOptions): OrphanCollector {
  const now = opts.now ?? Date.now;
  /** First time each orphan (or vanished rootfs) was seen, by `<what> of <id>`. */
  const firstSeen = new Map<string, number>();
  let timer: NodeJS.Timeout | undefined;
  let scanning: Promise<unknown> | undefined;
  let stopped = false;

  const call = opts.services.call.bind(opts.services);

  async function holdings(): Promise<Holding[]> {
    const out: Holding[] = [];
    for (const page of await allPages((cursor) => call(subidList, { cursor }))) {
      for (const a of page.allocations)
        out.push({ id: a.id, what: 'subid range', release: () => call(subidFree, { id: a.id }) });
    }
    const vol = await allPages((cursor) => call(volList, { cursor }));
    for (const v of vol.flatMap((p) => p.volumes)) {
      out.push({
        id: v.id,
        what: `${v.kind} volume`,
        release: () => call(volByKind[v.kind as VolumeKind].destroy, { id: v.id }, { timeoutMs: 120_000 }),
      });
    }
    for (const p of vol.flatMap((page) => page.preps)) {
      for (const holder of p.holders)
        out.push({
          id: holder,
          what: `prep of ${p.source}`,
          release: () => call(volRevertPrep, { id: holder }, { timeoutMs: 120_000 }),
        });
    }
    const rootfs = await allPages((cursor) => call(rootfsList, { cursor }));
    for (const c of rootfs.flatMap((p) => p.clones))
      out.push({
        id: c.id,
        what: 'rootfs clone',
        release: () => call(rootfsRemoveClone, { id: c.id }, { timeoutMs: 120_000 }),
      });
    for (const u of rootfs.flatMap((p) => p.uppers))
      out.push({
        id: u.id,
        what: 'upper-dir shift',
        release: () => call(rootfsRevertUpper, { id: u.id }, { timeoutMs: 120_000 }),
      });
    const shiftfs = await allPages((cursor) => call(shiftfsList, { cursor }));
    for (const m of shiftfs.flatMap((p) => p.marks)) {
      for (const holder of m.holders) {
        out.push({
          id: holder,
          what: `shiftfs mark ${m.source}`,
          release: () => call(shiftfsUnmark, { id: holder, mounts: [{ source: m.source, readonly: false }] }),
        });
      }
    }
    return out;
  }

  /** True once `key` has been seen on scans spanning at least the grace period. */
  function graceOver(key: string, seen: Set<string>): boolean {
    seen.add(key);
    const first = firstSeen.get(key);
    if (first === undefined) firstSeen.set(key, now());
    return first !== undefined && now() - first >= opts.graceMs;
  }

  async function scan(): Promise<OrphanReport> {
    const report: OrphanReport = { waiting: 0, released: [], repaired: [], failed: [] };
    const seen = new Set<string>();
    const knownIds = new Map<string, boolean>();
    const isKnown = async (id: string): Promise<boolean> => {
      if (!knownIds.has(id)) knownIds.set(id, await opts.known(id));
      return knownIds.get(id)!;
    };

    for (const h of await holdings()) {
      if (await isKnown(h.id)) continue;
      const key = `${h.what} of ${h.id}`;
      if (!graceOver(key, seen)) {
        report.waiting++;
        continue;
      }
      // Known meanwhile (a Register racing the scan)? Then it is not ours to release.
      if (await opts.known(h.id)) continue;
      try {
        await h.release();
        report.released.push(key);
      } catch (err) {
        if (isSysboxError(err, 'not-found')) report.released.push(key);
        else report.failed.push(`${key}: ${(err as Error).message}`);
      }
    }

    for (const r of await opts.running()) {
      if (await opts.exists(r.path)) continue;
      const key = `vanished rootfs of ${r.id}`;
      if (!graceOver(key, seen)) {
        report.waiting++;
        continue;
      }
      try {
        await opts.forget(r.id);
        report.repaired.push(r.id);
      } catch (err) {
        report.failed.push(`${key}: ${(err as Error).message}`);
      }
    }

    // What was not seen again is gone (released, or its container came back): forget its clock.
    for (const key of [...firstSeen.keys()])
      if (!seen.has(key) || report.released.includes(key)) firstSeen.delete(key);
    if (report.released.length > 0 || report.repaired.length > 0 || report.failed.length > 0) {
      opts.log.warn(report, 'orphan collection released what no container holds');
    } else if (report.waiting > 0) {
      opts.log.info({ waiting: report.waiting }, 'orphans seen, in their grace period');
    }
    return report;
  }

  return {
    scan: () => {
      const s = scan();
      scanning = s.catch(() => undefined);
      return s;
    },
    start(intervalMs) {
      stopped = false;
      const loop = (): void => {
        if (stopped) return;
        timer = setTimeout(() => {
          scanning = scan()
            .catch((err: unknown) => opts.log.warn({ err }, 'orphan scan failed; next one retries'))
            .finally(loop);
        }, intervalMs);
        timer.unref();
      };
      loop();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await scanning;
    },
  };
}
