import { z } from 'zod';
import { needsShift, scanIds, shift } from '@sysbox-mgr-ts/id-shift';
import { hostGuardOptions } from '@sysbox-mgr-ts/host-guard';
import { boolOption, option, packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { startVolApp } from './app.js';

await runDaemon({
  name: 'sysbox-vol-mgr',
  identity: 'vol-mgr',
  version: packageVersion(import.meta.url),
  about: 'inner-store volumes (docker, kubelet, k0s, k3s, rke2, buildkit, containerd) and mount-source preparation, served over NATS',
  options: {
    ...hostGuardOptions,
    sync: boolOption('sync', 'SYSBOX_VOL_SYNC', 'copy rootfs content into volumes on create and back on sync-out (--no-sync: upstream disable-inner-image-preload)', true),
    syncTimeoutMs: option({
      flag: 'sync-timeout-ms',
      env: 'SYSBOX_VOL_SYNC_TIMEOUT_MS',
      description: 'time bound of one rsync (sync-in or sync-out); past it the copy is killed and the request fails with timeout',
      schema: z.coerce.number().int().min(1000).default(30 * 60 * 1000),
    }),
    removeOrphans: boolOption('remove-orphans', 'SYSBOX_VOL_REMOVE_ORPHANS', 'on start, remove volume dirs that no record owns (else only report them)'),
    cleanupOnStop: boolOption('cleanup-on-stop', 'SYSBOX_VOL_CLEANUP_ON_STOP', "on stop, sync out and destroy every volume (upstream's behaviour)"),
    stopGraceMs: option({
      flag: 'stop-grace-ms',
      env: 'SYSBOX_VOL_STOP_GRACE_MS',
      description: 'on stop, how long syncs in flight may run before they are cancelled',
      schema: z.coerce.number().int().min(0).default(30_000),
    }),
  },
  async start({ config, nc, log, version }) {
    return startVolApp(config, { nc, log, version, idShift: { shift, scanIds, needsShift } });
  },
});
