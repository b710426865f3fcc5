/** sysbox-rootfs-cloner as data: options, and the start that wires config, state bucket, cloner, reconcile and the NATS service. */
import { join } from 'node:path';
import { z } from 'zod';
import { rootfsService } from '@sysbox-mgr-ts/contracts';
import { createHostGuard, hostGuardOptions } from '@sysbox-mgr-ts/host-guard';
import { shift } from '@sysbox-mgr-ts/id-shift';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { STATE_READ_CACHE_MS, cached, timedShift } from '@sysbox-mgr-ts/metrics';
import { boolOption, option, serve, defineApp } from '@sysbox-mgr-ts/service-kit';
import { CloneRecord, UpperRecord, createCloner } from './cloner.js';
import { createMounter } from './mounter.js';
import { kernelPageSize } from './page-size.js';
import { createBindings } from './service.js';

export const rootfsClonerApp = defineApp({
  name: 'sysbox-rootfs-cloner',
  identity: 'rootfs-cloner',
  about: 'overlayfs metacopy clones of container rootfs: create, chown, revert, remove',
  options: {
    ...hostGuardOptions,
    cleanupOnStop: boolOption(
      'cleanup-on-stop',
      'SYSBOX_ROOTFS_CLEANUP_ON_STOP',
      'remove every clone when the daemon stops (upstream behaviour)',
    ),
    mountTimeoutMs: option({
      flag: 'mount-timeout-ms',
      env: 'SYSBOX_ROOTFS_MOUNT_TIMEOUT_MS',
      description: 'time bound of each mount/umount call',
      schema: z.coerce.number().int().min(100).default(30_000),
    }),
    shiftTimeoutMs: option({
      flag: 'shift-timeout-ms',
      env: 'SYSBOX_ROOTFS_SHIFT_TIMEOUT_MS',
      description: 'time bound of one chown walk of a clone or upper dir',
      schema: z.coerce.number().int().min(1000).default(600_000),
    }),
  },
  async start({ config, nc, log, version, metrics }) {
    const kv = await openBucket(nc, rootfsService.bucket, { replicas: config.kvReplicas, metrics });
    const guard = createHostGuard(config);
    const inForce = await guard.rootsInForce();
    log.info(
      { roots: inForce.roots, notes: inForce.notes },
      'allowed rootfs roots (read again before a refusal)',
    );
    const cloner = createCloner({
      dataRoot: config.dataRoot,
      clones: createStateStore(kv, { node: config.node, namespace: 'clone', schema: CloneRecord, metrics }),
      uppers: createStateStore(kv, { node: config.node, namespace: 'upper', schema: UpperRecord, metrics }),
      mounter: createMounter({ timeoutMs: config.mountTimeoutMs, logger: log }),
      shiftIds: timedShift(shift, metrics),
      log,
      pageSize: kernelPageSize(),
      shiftTimeoutMs: config.shiftTimeoutMs,
      readMounts: () => readMountInfo(),
      guard,
    });
    const report = await cloner.reconcile();
    log.info(
      {
        adopted: report.adopted.length,
        reestablished: report.reestablished,
        dropped: report.dropped,
        failed: report.failed,
        finished: report.finished,
      },
      'clones reconciled',
    );
    const svc = serve({
      nc,
      service: rootfsService,
      node: config.node,
      version,
      log,
      bindings: createBindings(cloner),
      metadata: { dataRoot: join(config.dataRoot, 'rootfs') },
      metrics,
    });
    metrics?.state(
      'clones',
      cached(async () => (await cloner.list()).clones.length, STATE_READ_CACHE_MS),
    );
    return {
      async stop() {
        await svc.stop();
        if (config.cleanupOnStop) {
          const r = await cloner.removeAll();
          log.info({ removed: r.removed.length, failures: r.failures }, 'clones removed on stop');
        }
      },
    };
  },
});
