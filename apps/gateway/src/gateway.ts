/**
 * Builds the gateway from its parts: host probes, the container table in KV and what acts on it
 * (core.ts: one table, handed to the manager, removal and the start-up repairs), the removal watch
 * that follows the table, the orphan collector and the gRPC server. main.ts and the tests use it.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { GATEWAY_BUCKET, isSysboxError } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { STATE_READ_CACHE_MS, cached, type AppMetrics } from '@sysbox-mgr-ts/metrics';
import { createServiceClient, type Logger } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';
import type { GatewayFlags } from './flags.js';
import { startGrpcServer, type GrpcServerHandle } from './grpc-server.js';
import { askUntilAnswered, type RetrySchedule } from './background-retry.js';
import { startBootReconcile } from './boot-settle.js';
import type { MgrConfig } from './container-config.js';
import { createCore } from './core.js';
import type { Manager } from './manager.js';
import type { NetnsMembers } from './netns.js';
import { hostChecks, probeHost, type HostChecks, type HostFacts } from './probes.js';
import { ContainerRecord, runningPathsOf, watchedPathsOf } from './record.js';
import { dockerAutoRemove } from './docker.js';
import { createOrphanCollector, type OrphanCollector } from './orphans.js';
import { askShiftfsSupport, type ShiftfsSupport } from './shiftfs-support.js';
import type { StartReconcile } from './start-reconcile.js';
import { startSubidReconcile, type SubidReconcile } from './subid-reconcile.js';
import type { ContainerTable } from './table.js';
import { createRemovalWatcher, type RemovalWatcher } from './watcher.js';
import { parseContainerId } from './wire.js';

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
  /** The gateway's state, the one table everything below reads and writes. */
  table: ContainerTable;
  manager: Manager;
  /** Releases everything of a stopped container and forgets it (what the watch runs). */
  removeContainer(id: string): Promise<boolean>;
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

  const core = createCore({
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
    autoRemove: s.dockerSocket ? (id) => dockerAutoRemove(id, s.dockerSocket) : undefined,
    bootId: opts.bootId,
  });
  const { table, manager, removeContainer } = core;
  const watcher = createRemovalWatcher({
    intervalMs: s.watchIntervalMs,
    exists: (p) => checks.exists(p),
    list: async () => watchedPathsOf(await table.list()),
    onRemoved: removeContainer,
    log,
  });
  // The watch follows the table: a save that stops a container starts its watch (table.ts).
  table.onWatchChange((id, path) => (path === undefined ? watcher.unwatch(id) : watcher.watch(id, path)));
  // One read of the table at start serves the removal watch and the start-up repairs below.
  const records = await table.list();
  await watcher.start(watchedPathsOf(records));
  log.info({ watching: watcher.watching().length }, 'removal watch resumed from the container table');
  const orphans = createOrphanCollector({
    services,
    // Ids from service lists: a hostile one is refused (invalid-request), never looked up.
    known: async (id) => (await table.get(parseContainerId(id))) !== undefined,
    running: async () => runningPathsOf(await table.list()),
    exists: (p) => checks.exists(p),
    forget: async (id) => {
      await manager.unregister({ id }).catch((err: unknown) => {
        if (!isSysboxError(err, 'failed-precondition')) throw err;
      });
      await removeContainer(id);
    },
    graceMs: s.orphanGraceMs,
    log,
  });
  if (s.orphanScanMs > 0) orphans.start(s.orphanScanMs);
  // Before the socket opens: a call for a container of an earlier boot, or whose range is being
  // adopted, waits for that (boot first: a container that stopped with the host needs no range).
  const retry = opts.subidReconcileRetry ?? START_RECONCILE_RETRY;
  const bootReconcile = startBootReconcile({
    records,
    table,
    settle: core.settleBoot,
    bootId: core.bootId,
    retry,
    log,
  });
  const subidReconcile = startSubidReconcile({ records, table, services, checks: core.checks, retry, log });

  const grpc = await startGrpcServer({
    socketPath: s.socket,
    manager,
    log,
    metrics,
  });
  metrics?.state(
    'containers',
    cached(async () => (await table.list()).length, STATE_READ_CACHE_MS),
  );
  // shiftfs-mgr may come up after the gateway (started by hand or another supervisor, or down
  // while systemd started the gateway). Calls never wait for it: ContainerConfig says no until it
  // answers. The manager reads this config object at every Register, so the answer is filled in
  // place and holds from the next container on.
  const shiftfsRetry = opts.shiftfsRetry ?? SHIFTFS_RETRY;
  const shiftfsWatch =
    !s.disableShiftfs && shiftfs === undefined
      ? askUntilAnswered(
          askShiftfs,
          (answer) => {
            Object.assign(config, shiftfsConfig(s, answer));
            tellShiftfs(answer);
          },
          shiftfsRetry,
        )
      : undefined;
  if (shiftfsWatch)
    log.warn(
      { retry: shiftfsRetry },
      'shiftfs-mgr did not answer: shiftfs is off until it does; asking again in the background',
    );
  return {
    table,
    manager,
    removeContainer,
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
