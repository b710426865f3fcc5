/**
 * Builds the gateway from its parts: host probes, the container table in KV, the services
 * client, the manager, the removal watch and the gRPC server. main.ts and the tests both use it.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { GATEWAY_BUCKET, isSysboxError } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { STATE_READ_CACHE_MS, cached, type AppMetrics } from '@sysbox-mgr-ts/metrics';
import { createServiceClient, type Logger } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';
import type { GatewayFlags } from './flags.js';
import { startGrpcServer, type GrpcServerHandle } from './grpc-server.js';
import { createManager, watchedPathsOf, type Manager, type MgrConfig } from './manager.js';
import type { NetnsMembers } from './netns.js';
import {
  askShiftfsSupport,
  askUntilAnswered,
  hostChecks,
  probeHost,
  type HostChecks,
  type HostFacts,
  type RetrySchedule,
  type ShiftfsSupport,
} from './probes.js';
import { ContainerRecord } from './record.js';
import { dockerAutoRemove } from './docker.js';
import { createOrphanCollector, type OrphanCollector } from './orphans.js';
import type { StartReconcile } from './start-reconcile.js';
import type { SubidReconcile } from './subid-reconcile.js';
import { createRemovalWatcher, type RemovalWatcher } from './watcher.js';

/**
 * A silent shiftfs-mgr is asked again after 1 s (one started just after the gateway is seen at
 * once), then every 2, 4, ... up to 30 s: one small request a node without shiftfs-mgr can afford.
 */
const SHIFTFS_RETRY: RetrySchedule = { firstMs: 1000, maxMs: 30_000 };

/**
 * A start-up repair a service did not answer (the adoption of lost subid ranges, the settle of a
 * container of an earlier boot) is tried again every 5 s.
 */
const START_RECONCILE_RETRY: RetrySchedule = { firstMs: 5000, maxMs: 5000 };

export interface GatewaySettings extends GatewayFlags {
  node: string;
  dataRoot: string;
  kvReplicas: number;
}

export interface Gateway {
  manager: Manager;
  watcher: RemovalWatcher;
  orphans: OrphanCollector;
  /** The adoption of subid ranges a lost gateway held unwritten. */
  subidReconcile: SubidReconcile;
  /** Records of an earlier boot turned into stopped containers of this one, unstamped ones stamped. */
  bootReconcile: StartReconcile;
  grpc: GrpcServerHandle;
  config: MgrConfig;
  facts: HostFacts;
  stop(): Promise<void>;
}

/**
 * ShiftfsOk and ShiftfsOnOverlayfsOk, as upstream's newSysboxMgr sets them: each from its own
 * functional check; with --disable-shiftfs-precheck both from whether the kernel has shiftfs;
 * never with --disable-shiftfs, nor before shiftfs-mgr answered.
 */
export function shiftfsConfig(
  flags: GatewayFlags,
  shiftfs: ShiftfsSupport | undefined,
): Pick<MgrConfig, 'shiftfsOk' | 'shiftfsOnOverlayfsOk'> {
  if (flags.disableShiftfs || shiftfs === undefined) return { shiftfsOk: false, shiftfsOnOverlayfsOk: false };
  if (flags.disableShiftfsPrecheck)
    return { shiftfsOk: shiftfs.inKernel, shiftfsOnOverlayfsOk: shiftfs.inKernel };
  return { shiftfsOk: shiftfs.supported, shiftfsOnOverlayfsOk: shiftfs.supportedOnOverlayfs };
}

export function mgrConfigFrom(
  flags: GatewayFlags,
  facts: HostFacts,
  shiftfs: ShiftfsSupport | undefined,
): MgrConfig {
  return {
    aliasDns: flags.aliasDns,
    ...shiftfsConfig(flags, shiftfs),
    idMapMountOk: facts.idMapMountOk,
    overlayfsOnIDMapMountOk: facts.overlayfsOnIDMapMountOk,
    noRootfsCloning: flags.disableRootfsCloning,
    ignoreSysfsChown: flags.ignoreSysfsChown,
    allowTrustedXattr: flags.allowTrustedXattr,
    honorCaps: flags.honorCaps,
    syscontMode: flags.syscontMode,
    fsuidMapFailOnErr: flags.fsuidMapFailOnError,
    noInnerImgPreload: flags.disableInnerImagePreload,
    noShiftfsOnFuse: flags.disableShiftfsOnFuse,
    relaxedReadOnly: flags.relaxedReadOnly,
    mountBinfmtMisc: flags.syscontMode && facts.binfmtMiscNamespaced,
  };
}

export async function startGateway(opts: {
  nc: NatsConnection;
  settings: GatewaySettings;
  log: Logger;
  /** Tests replace host facts and checks; production probes the host. */
  facts?: HostFacts;
  checks?: HostChecks;
  clock?: () => Date;
  /** When to ask a silent shiftfs-mgr again (tests shorten it). */
  shiftfsRetry?: RetrySchedule;
  /** When to try a start-up repair a service did not answer again (tests shorten it). */
  subidReconcileRetry?: RetrySchedule;
  /** The kernel's boot id; read from /proc/sys/kernel/random/boot_id when left out. */
  bootId?: string;
  /** Records gRPC calls, KV operations and the table's size (--metrics-address). */
  metrics?: AppMetrics;
}): Promise<Gateway> {
  const { nc, settings: s, log, metrics } = opts;
  const services = createServiceClient(nc, {
    node: s.node,
    timeoutMs: s.opTimeoutMs,
    waitForResponderMs: s.serviceWaitMs,
    log,
  });
  const facts =
    opts.facts ??
    (await probeHost({
      disableIdmappedMount: s.disableIdmappedMount,
      disableOvfsOnIdmappedMount: s.disableOvfsOnIdmappedMount,
      dataRoot: s.dataRoot,
      log,
    }));
  const askShiftfs = () => askShiftfsSupport(services, Math.min(2000, s.opTimeoutMs));
  const shiftfs = s.disableShiftfs ? undefined : await askShiftfs();
  const config = mgrConfigFrom(s, facts, shiftfs);
  log.info(
    {
      kernel: facts.kernelRelease,
      hostDistro: facts.hostDistro,
      kernelHeaders: facts.linuxHeaderMounts.length > 0 ? facts.hostKernelHdrPath : null,
      binfmtMisc: facts.binfmtMiscReason,
      ...config,
    },
    `shiftfs ok: ${config.shiftfsOk ? 'yes' : 'no'}; ID-mapped mounts: ${config.idMapMountOk ? 'yes' : 'no'}; ` +
      `overlayfs on ID-mapped mounts: ${config.overlayfsOnIDMapMountOk ? 'yes' : 'no'}; ` +
      `${config.syscontMode ? 'system' : 'regular'} container mode`,
  );
  const tellShiftfs = (answer: ShiftfsSupport): void =>
    log.info(
      {
        shiftfsOk: config.shiftfsOk,
        shiftfsOnOverlayfsOk: config.shiftfsOnOverlayfsOk,
        reason: answer.reason,
        reasonOnOverlayfs: answer.reasonOnOverlayfs,
      },
      `shiftfs-mgr: shiftfs ok: ${config.shiftfsOk ? 'yes' : 'no'}; shiftfs on overlayfs ok: ${config.shiftfsOnOverlayfsOk ? 'yes' : 'no'}`,
    );
  if (shiftfs) tellShiftfs(shiftfs);

  const kv = await openBucket(nc, GATEWAY_BUCKET, {
    replicas: s.kvReplicas,
    description: 'sysbox gateway container table',
    metrics,
  });
  const containers = createStateStore(kv, {
    node: s.node,
    namespace: 'containers',
    schema: ContainerRecord,
    metrics,
  });
  const netns = createStateStore(kv, {
    node: s.node,
    namespace: 'netns',
    metrics,
    schema: z.object({ ids: z.array(z.string()) }) satisfies z.ZodType<NetnsMembers>,
  });
  const checks = opts.checks ?? hostChecks(facts.kernelRelease);

  // eslint-disable-next-line prefer-const -- the watcher and the manager call each other
  let manager: Manager | undefined;
  const watcher = createRemovalWatcher({
    intervalMs: s.watchIntervalMs,
    exists: (p) => checks.exists(p),
    list: () => manager!.watchedPaths(),
    onRemoved: (id) => manager!.removeContainer(id),
    log,
  });
  manager = createManager({
    services,
    containers,
    netns,
    host: checks,
    facts,
    config,
    timeouts: { opMs: s.opTimeoutMs, longOpMs: s.longOpTimeoutMs },
    clock: opts.clock ?? (() => new Date()),
    log,
    replyChecks: { dataRoot: s.dataRoot, subuidFile: s.subuidFile, subgidFile: s.subgidFile },
    onWatch: (id, path) => (path === undefined ? watcher.unwatch(id) : watcher.watch(id, path)),
    autoRemove: s.dockerSocket ? (id) => dockerAutoRemove(id, s.dockerSocket) : undefined,
    bootId: opts.bootId,
  });
  // One read of the table at start serves the removal watch and the subid adoption below.
  const records = await manager.list();
  await watcher.start(watchedPathsOf(records));
  log.info({ watching: watcher.watching().length }, 'removal watch resumed from the container table');
  const orphans = createOrphanCollector({
    services,
    known: async (id) => (await manager.get(id)) !== undefined,
    running: () => manager.runningPaths(),
    exists: (p) => checks.exists(p),
    forget: async (id) => {
      await manager.unregister({ id }).catch((err: unknown) => {
        if (!isSysboxError(err, 'failed-precondition')) throw err;
      });
      await manager.removeContainer(id);
    },
    graceMs: s.orphanGraceMs,
    log,
  });
  if (s.orphanScanMs > 0) orphans.start(s.orphanScanMs);
  // Before the socket opens: a call for a container of an earlier boot, or whose range is being
  // adopted, waits for that (boot first: a container that stopped with the host needs no range).
  const bootReconcile = manager.reconcileBoot(records, opts.subidReconcileRetry ?? START_RECONCILE_RETRY);
  const subidReconcile = manager.reconcileSubids(records, opts.subidReconcileRetry ?? START_RECONCILE_RETRY);

  const grpc = await startGrpcServer({
    socketPath: s.socket,
    manager,
    log,
    metrics,
  });
  metrics?.state(
    'containers',
    cached(async () => (await manager.list()).length, STATE_READ_CACHE_MS),
  );
  // shiftfs-mgr may come up after the gateway (started by hand or another supervisor, or down
  // while systemd started the gateway). Calls never wait for it: ContainerConfig says no until it
  // answers. The manager reads this config object at every Register, so the answer is filled in
  // place and holds from the next container on.
  const retry = opts.shiftfsRetry ?? SHIFTFS_RETRY;
  const shiftfsWatch =
    !s.disableShiftfs && shiftfs === undefined
      ? askUntilAnswered(
          askShiftfs,
          (answer) => {
            Object.assign(config, shiftfsConfig(s, answer));
            tellShiftfs(answer);
          },
          retry,
        )
      : undefined;
  if (shiftfsWatch)
    log.warn(
      { retry },
      'shiftfs-mgr did not answer: shiftfs is off until it does; asking again in the background',
    );
  return {
    manager,
    watcher,
    grpc,
    config,
    facts,
    orphans,
    subidReconcile,
    bootReconcile,
    async stop() {
      await shiftfsWatch?.stop();
      await grpc.stop();
      await subidReconcile.stop();
      await bootReconcile.stop();
      await orphans.stop();
      await watcher.stop();
    },
  };
}
