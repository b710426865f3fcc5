/** sysbox-shiftfs-mgr as data: options, and the start that wires the probe, mark store, reconcile and the NATS service. */
import { join } from 'node:path';
import { shiftfsService } from '@sysbox-mgr-ts/contracts';
import { readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { STATE_READ_CACHE_MS, cached } from '@sysbox-mgr-ts/metrics';
import { boolOption, serve, defineApp } from '@sysbox-mgr-ts/service-kit';
import { openMarkStore } from './mark-store.js';
import { createShiftfsMarks, makeWorkDir } from './marks.js';
import { createShiftfsMounter } from './mounter.js';
import { probeShiftfs } from './probe.js';
import { createShiftfsBindings, shiftfsMetadata } from './service.js';

export const shiftfsMgrApp = defineApp({
  name: 'sysbox-shiftfs-mgr',
  identity: 'shiftfs-mgr',
  about: 'reference-counted shiftfs marks on host paths, served over NATS',
  options: {
    modprobe: boolOption(
      'modprobe',
      'SYSBOX_SHIFTFS_MODPROBE',
      'run `modprobe shiftfs` before probing /proc/filesystems',
      true,
    ),
    // Upstream's sysbox-mgr flag, with the gateway's environment variable: one setting for both.
    disableShiftfsPrecheck: boolOption(
      'disable-shiftfs-precheck',
      'SYSBOX_MGR_DISABLE_SHIFTFS_PRECHECK',
      'do not try shiftfs at start (a mount in a user namespace, a file created and renamed): trust /proc/filesystems',
    ),
  },
  async start({ config, nc, log, version, metrics }) {
    const workDir = await makeWorkDir(join(config.dataRoot, 'shiftfs'));
    const probe = await probeShiftfs({
      modprobe: config.modprobe,
      precheck: !config.disableShiftfsPrecheck,
      checkDir: workDir,
      log,
    });
    log.info({ shiftfs: probe.supported, inKernel: probe.inKernel }, probe.reason);
    log.info({ shiftfsOnOverlayfs: probe.onOverlayfs.supported }, probe.onOverlayfs.reason);
    const marks = await createShiftfsMarks({
      store: await openMarkStore(nc, { node: config.node, replicas: config.kvReplicas, metrics }),
      mounter: createShiftfsMounter(log),
      readMounts: () => readMountInfo(),
      workDir,
      dataRoot: config.dataRoot,
      probe,
      log,
    });
    const report = await marks.reconcile();
    log.info(
      { kept: report.kept, dropped: report.dropped.length, removedDirs: report.removedDirs.length },
      'shiftfs marks reconciled',
    );
    const svc = serve({
      nc,
      service: shiftfsService,
      node: config.node,
      version,
      log,
      bindings: createShiftfsBindings(marks, probe),
      metadata: shiftfsMetadata(probe),
      metrics,
    });
    metrics?.state(
      'marks',
      cached(async () => (await marks.list()).length, STATE_READ_CACHE_MS),
    );
    return { stop: () => svc.stop() };
  },
});
