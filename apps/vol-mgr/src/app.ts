/**
 * Builds the whole daemon from a NATS connection and config: state stores, one volume manager
 * per kind, mount prep, reconcile, the served endpoints. main.ts and the tests both start it here.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { VOLUME_KINDS, volService, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { createHostGuard, hostGuardOptions, type RuntimeConfigPaths } from '@sysbox-mgr-ts/host-guard';
import { needsShift, scanIds, shift } from '@sysbox-mgr-ts/id-shift';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { STATE_READ_CACHE_MS, cached, timedShift, type AppMetrics } from '@sysbox-mgr-ts/metrics';
import { readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { boolOption, defineApp, option, serve } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';
import type { Logger } from 'pino';
import { prepareDataRoot } from './paths.js';
import { createMountPrep, PrepRecordSchema, type IdShifter } from './prep.js';
import type { ScanIds } from './rsync.js';
import { createVolBindings } from './service.js';
import { createVolumeManager, VolumeRecord, type ReconcileReport, type VolumeManager } from './volumes.js';

export interface VolAppConfig extends RuntimeConfigPaths {
  node: string;
  dataRoot: string;
  kvReplicas: number;
  sync: boolean;
  syncTimeoutMs: number;
  removeOrphans: boolean;
  cleanupOnStop: boolean;
  stopGraceMs: number;
  /** Dirs a volume's source rootfs may lie below beyond the runtimes' declared stores (the data root is added). */
  allowedRootfsRoots: readonly string[];
  /** Volume owners and prep ids must lie in the ranges these files delegate. */
  subuidFile: string;
  subgidFile: string;
}

export interface VolAppDeps {
  nc: NatsConnection;
  log: Logger;
  version: string;
  idShift: IdShifter & { scanIds: ScanIds };
  rsyncExtraArgs?: readonly string[];
  metrics?: AppMetrics;
}

export interface VolApp {
  volumes: Record<VolumeKind, VolumeManager>;
  reconciled: ReconcileReport[];
  stop(): Promise<void>;
}

export async function startVolApp(config: VolAppConfig, deps: VolAppDeps): Promise<VolApp> {
  const { nc, log, metrics } = deps;
  await prepareDataRoot(config.dataRoot);
  const guard = createHostGuard(config);
  const inForce = await guard.rootsInForce();
  log.info(
    { roots: inForce.roots, notes: inForce.notes },
    'allowed rootfs roots (read again before a refusal)',
  );
  const kv = await openBucket(nc, volService.bucket, {
    replicas: config.kvReplicas,
    description: 'volumes and mount preps',
    metrics,
  });
  const volumes = Object.fromEntries(
    VOLUME_KINDS.map((kind) => [
      kind,
      createVolumeManager({
        kind,
        dataRoot: config.dataRoot,
        store: createStateStore(kv, { node: config.node, namespace: kind, schema: VolumeRecord, metrics }),
        scanIds: (root) => deps.idShift.scanIds(root),
        readMounts: () => readMountInfo(),
        log,
        guard,
        sync: config.sync,
        syncTimeoutMs: config.syncTimeoutMs,
        rsyncExtraArgs: deps.rsyncExtraArgs,
        metrics,
      }),
    ]),
  ) as Record<VolumeKind, VolumeManager>;
  const prep = createMountPrep({
    store: createStateStore(kv, { node: config.node, namespace: 'prep', schema: PrepRecordSchema, metrics }),
    shifter: { ...deps.idShift, shift: timedShift(deps.idShift.shift, metrics) },
    guard,
    log,
  });
  const reconciled: ReconcileReport[] = [];
  for (const kind of VOLUME_KINDS)
    reconciled.push(await volumes[kind].reconcile({ removeOrphans: config.removeOrphans }));
  log.info({ volumes: reconciled.reduce((n, r) => n + r.kept.length, 0) }, 'volumes reconciled');
  // A prep or revert-prep cut short by a kill is finished before any request can see its source.
  const prepReport = await prep.reconcile();
  log.info({ finished: prepReport.finished, failed: prepReport.failed }, 'mount preps reconciled');

  const svc = serve({
    nc,
    service: volService,
    node: config.node,
    version: deps.version,
    log,
    bindings: createVolBindings(volumes, prep),
    metadata: { sync: String(config.sync) },
    metrics,
  });
  // Volumes by kind on scrape: one list per kind, at most once per STATE_READ_CACHE_MS.
  metrics?.state(
    'volumes',
    cached(async () => {
      const counts = await Promise.all(VOLUME_KINDS.map(async (k) => [k, (await volumes[k].list()).length]));
      return Object.fromEntries(counts) as Record<string, number>;
    }, STATE_READ_CACHE_MS),
  );
  return {
    volumes,
    reconciled,
    async stop() {
      await svc.stop();
      await Promise.all(VOLUME_KINDS.map((k) => volumes[k].drain(config.stopGraceMs)));
      if (config.cleanupOnStop) {
        for (const kind of VOLUME_KINDS) await volumes[kind].syncOutAndDestroyAll();
      }
    },
  };
}

/** sysbox-vol-mgr as data: what its bin, the all-in-one bin and benches start. */
export const volMgrApp = defineApp({
  name: 'sysbox-vol-mgr',
  identity: 'vol-mgr',
  about:
    'inner-store volumes (docker, kubelet, k0s, k3s, rke2, buildkit, containerd) and mount-source preparation, served over NATS',
  options: {
    ...hostGuardOptions,
    sync: boolOption(
      'sync',
      'SYSBOX_VOL_SYNC',
      'copy volumes back into the rootfs on sync-out (--no-sync: upstream disable-inner-image-preload; sync-in on create always runs)',
      true,
    ),
    syncTimeoutMs: option({
      flag: 'sync-timeout-ms',
      env: 'SYSBOX_VOL_SYNC_TIMEOUT_MS',
      description:
        'time bound of one rsync (sync-in or sync-out); past it the copy is killed and the request fails with timeout',
      schema: z.coerce
        .number()
        .int()
        .min(1000)
        .default(30 * 60 * 1000),
    }),
    removeOrphans: boolOption(
      'remove-orphans',
      'SYSBOX_VOL_REMOVE_ORPHANS',
      'on start, remove volume dirs that no record owns (else only report them)',
    ),
    cleanupOnStop: boolOption(
      'cleanup-on-stop',
      'SYSBOX_VOL_CLEANUP_ON_STOP',
      "on stop, sync out and destroy every volume (upstream's behaviour)",
    ),
    stopGraceMs: option({
      flag: 'stop-grace-ms',
      env: 'SYSBOX_VOL_STOP_GRACE_MS',
      description: 'on stop, how long syncs in flight may run before they are cancelled',
      schema: z.coerce.number().int().min(0).default(30_000),
    }),
  },
  async start({ config, nc, log, version, metrics }) {
    return startVolApp(config, { nc, log, version, idShift: { shift, scanIds, needsShift }, metrics });
  },
});
