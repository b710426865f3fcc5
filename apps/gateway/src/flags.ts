/**
 * Every upstream sysbox-mgr flag with upstream's default (data-root and log-level come from the
 * common options), plus the gateway's own: socket, time bounds, removal-watch interval.
 */
import { HostPath } from '@sysbox-mgr-ts/contracts';
import { subidFileOptions } from '@sysbox-mgr-ts/host-guard';
import { boolOption, option, type ConfigOf } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';

const ms = (def: number, min: number) =>
  z.coerce
    .number()
    .int()
    .min(min)
    .max(24 * 3600 * 1000)
    .default(def);

export const gatewayOptions = {
  ...subidFileOptions,
  socket: option({
    flag: 'socket',
    env: 'SYSBOX_MGR_SOCKET',
    description: 'unix socket sysbox-runc dials (its dir is made 0700, the socket 0600)',
    schema: HostPath.default('/run/sysbox/sysmgr.sock'),
  }),
  opTimeoutMs: option({
    flag: 'op-timeout-ms',
    env: 'SYSBOX_MGR_OP_TIMEOUT_MS',
    description: 'time bound of a short service call (register-time lookups, marks, subids)',
    schema: ms(10_000, 100),
  }),
  serviceWaitMs: option({
    flag: 'service-wait-ms',
    env: 'SYSBOX_MGR_SERVICE_WAIT_MS',
    description:
      "how long a call waits for a service with no responder (a daemon restarting, a NATS failover) before answering UNAVAILABLE; keep it below sysbox-runc's deadline",
    schema: ms(3000, 0),
  }),
  dockerSocket: option({
    flag: 'docker-socket',
    env: 'SYSBOX_MGR_DOCKER_SOCKET',
    description:
      "Docker Engine API socket, asked whether a container is removed when it stops (docker run --rm); '' never asks",
    schema: z.union([z.literal(''), HostPath]).default('/var/run/docker.sock'),
  }),
  orphanScanMs: option({
    flag: 'orphan-scan-ms',
    env: 'SYSBOX_MGR_ORPHAN_SCAN_MS',
    description:
      "how often the services' records are compared with the container table to release orphans (0: never)",
    schema: ms(60_000, 0),
  }),
  orphanGraceMs: option({
    flag: 'orphan-grace-ms',
    env: 'SYSBOX_MGR_ORPHAN_GRACE_MS',
    description:
      'how long a record no container holds (or a running container whose rootfs vanished) is left before it is released',
    schema: ms(120_000, 0),
  }),
  longOpTimeoutMs: option({
    flag: 'long-op-timeout-ms',
    env: 'SYSBOX_MGR_LONG_OP_TIMEOUT_MS',
    description:
      "time bound of a long background service call no client waits for (removal, orphan release); calls made while serving sysbox-runc are bounded by its RPC's limit, never shorter than its client waits",
    schema: ms(540_000, 100),
  }),
  watchIntervalMs: option({
    flag: 'watch-interval-ms',
    env: 'SYSBOX_MGR_WATCH_INTERVAL_MS',
    description: "how often stopped containers' rootfs paths are checked for removal",
    schema: ms(250, 10),
  }),
  log: option({
    flag: 'log',
    short: 'l',
    env: 'SYSBOX_MGR_LOG',
    description: 'log file path, or empty for stdout',
    schema: z.union([z.literal(''), HostPath]).default(''),
  }),
  // Upstream's hidden profiling switches: accepted so its unit files and scripts still start us.
  cpuProfiling: {
    ...boolOption('cpu-profiling', undefined, 'no effect (upstream Go profiling)'),
    hidden: true,
  },
  memoryProfiling: {
    ...boolOption('memory-profiling', undefined, 'no effect (upstream Go profiling)'),
    hidden: true,
  },
  logFormat: option({
    flag: 'log-format',
    env: 'SYSBOX_MGR_LOG_FORMAT',
    description: 'json or text',
    schema: z.enum(['json', 'text']).default('json'),
  }),
  aliasDns: boolOption(
    'alias-dns',
    'SYSBOX_MGR_ALIAS_DNS',
    'alias the DNS IP inside the container so it never has a localhost address (needed on user-defined Docker bridges)',
    true,
  ),
  disableShiftfs: boolOption('disable-shiftfs', 'SYSBOX_MGR_DISABLE_SHIFTFS', 'do not use shiftfs'),
  disableShiftfsOnFuse: boolOption(
    'disable-shiftfs-on-fuse',
    'SYSBOX_MGR_DISABLE_SHIFTFS_ON_FUSE',
    'do not put shiftfs on FUSE-backed mounts',
  ),
  disableShiftfsPrecheck: boolOption(
    'disable-shiftfs-precheck',
    'SYSBOX_MGR_DISABLE_SHIFTFS_PRECHECK',
    "trust that the kernel has shiftfs instead of shiftfs-mgr's functional checks, for ShiftfsOk and ShiftfsOnOverlayfsOk (give it to shiftfs-mgr too, to skip the checks there)",
  ),
  disableIdmappedMount: boolOption(
    'disable-idmapped-mount',
    'SYSBOX_MGR_DISABLE_IDMAPPED_MOUNT',
    'do not use ID-mapped mounts',
  ),
  disableRootfsCloning: boolOption(
    'disable-rootfs-cloning',
    'SYSBOX_MGR_DISABLE_ROOTFS_CLONING',
    'do not clone the rootfs for a fast chown (slow starts on hosts without shiftfs)',
  ),
  disableOvfsOnIdmappedMount: boolOption(
    'disable-ovfs-on-idmapped-mount',
    'SYSBOX_MGR_DISABLE_OVFS_ON_IDMAPPED_MOUNT',
    'do not ID-map overlayfs (kernel 5.19+); chown or shiftfs instead',
  ),
  disableInnerImagePreload: boolOption(
    'disable-inner-image-preload',
    'SYSBOX_MGR_DISABLE_INNER_IMAGE_PRELOAD',
    'do not sync inner-store volumes back into the rootfs on stop and pause (faster stops)',
  ),
  ignoreSysfsChown: boolOption(
    'ignore-sysfs-chown',
    'SYSBOX_MGR_IGNORE_SYSFS_CHOWN',
    'ignore chown of /sys inside containers',
  ),
  allowTrustedXattr: boolOption(
    'allow-trusted-xattr',
    'SYSBOX_MGR_ALLOW_TRUSTED_XATTR',
    'allow trusted.overlay.opaque inside containers (kernel < 5.11)',
  ),
  honorCaps: boolOption('honor-caps', 'SYSBOX_MGR_HONOR_CAPS', "honor the OCI spec's process capabilities"),
  syscontMode: boolOption(
    'syscont-mode',
    'SYSBOX_MGR_SYSCONT_MODE',
    'system container mode (systemd, Docker, Kubernetes inside); false = regular container mode',
    true,
  ),
  relaxedReadOnly: boolOption(
    'relaxed-read-only',
    'SYSBOX_MGR_RELAXED_READ_ONLY',
    'read-only containers keep some mountpoints writable',
  ),
  fsuidMapFailOnError: boolOption(
    'fsuid-map-fail-on-error',
    'SYSBOX_MGR_FSUID_MAP_FAIL_ON_ERROR',
    'fail a container launch when filesystem uid-mapping fails',
  ),
};

export type GatewayFlags = ConfigOf<typeof gatewayOptions>;

/** Upstream accepts `--log-level warning`; the common option spells it `warn`. */
export function normalizeArgv(argv: readonly string[]): string[] {
  return argv.map((a, i) =>
    a === '--log-level=warning'
      ? '--log-level=warn'
      : a === 'warning' && argv[i - 1] === '--log-level'
        ? 'warn'
        : a,
  );
}
