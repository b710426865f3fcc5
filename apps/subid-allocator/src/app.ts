/** sysbox-subid-allocator as data: options, and the start that wires the pool, the stores, reconcile and the NATS service. */
import { HostPath, SUBID_BLOCK, subidService } from '@sysbox-mgr-ts/contracts';
import { STATE_READ_CACHE_MS, cached, type AppMetrics } from '@sysbox-mgr-ts/metrics';
import { option, serve, defineApp } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';
import { createSubidAlloc } from './allocator.js';
import { setupSubidPool } from './hostfiles.js';
import { createSubidBindings } from './service.js';
import { openSubidStores, type SubidStores } from './subid-store.js';

/** Upstream's paid edition reserves 4096 blocks of 65536 ids for exclusive ranges. */
const DEFAULT_POOL = { shared: SUBID_BLOCK, exclusive: 4096 * SUBID_BLOCK } as const;

const options = {
  mode: option({
    flag: 'mode',
    env: 'SYSBOX_SUBID_MODE',
    description: 'shared: every container gets the same range; exclusive: each its own block',
    schema: z.enum(['shared', 'exclusive']).default('shared'),
  }),
  poolSize: option({
    flag: 'pool-size',
    env: 'SYSBOX_SUBID_POOL_SIZE',
    description: `ids reserved for the sysbox user, a multiple of ${SUBID_BLOCK} (default: ${DEFAULT_POOL.shared} shared, ${DEFAULT_POOL.exclusive} exclusive)`,
    schema: z.coerce
      .number()
      .int()
      .min(SUBID_BLOCK)
      .max(2 ** 32 - SUBID_BLOCK)
      .refine((n) => n % SUBID_BLOCK === 0, `must be a multiple of ${SUBID_BLOCK}`)
      .optional(),
  }),
  user: option({
    flag: 'user',
    env: 'SYSBOX_SUBID_USER',
    description: 'user whose /etc/subuid and /etc/subgid entry holds the pool',
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'not a valid user name')
      .default('sysbox'),
  }),
  subuidFile: option({
    flag: 'subuid-file',
    env: 'SYSBOX_SUBUID_FILE',
    description: 'subordinate uid file',
    schema: HostPath.default('/etc/subuid'),
  }),
  subgidFile: option({
    flag: 'subgid-file',
    env: 'SYSBOX_SUBGID_FILE',
    description: 'subordinate gid file',
    schema: HostPath.default('/etc/subgid'),
  }),
  loginDefs: option({
    flag: 'login-defs',
    description: 'source of SUB_UID_MIN/MAX and SUB_GID_MIN/MAX (shadow defaults when absent)',
    schema: HostPath.default('/etc/login.defs'),
  }),
};

export const subidAllocatorApp = defineApp({
  name: 'sysbox-subid-allocator',
  identity: 'subid-allocator',
  about: 'subordinate uid/gid ranges for system containers, shared or exclusive, kept in JetStream KV',
  options,
  async start({ config, nc, log, version, metrics }) {
    const size = config.poolSize ?? DEFAULT_POOL[config.mode];
    const pool = await setupSubidPool({ ...config, size });
    log.info({ pool, mode: config.mode, user: config.user }, 'subid pool ready');
    const stores = await openSubidStores(nc, { node: config.node, replicas: config.kvReplicas, metrics });
    const allocator = createSubidAlloc({
      mode: config.mode,
      pool,
      stores,
      log,
      maxListBytes: nc.info ? nc.info.max_payload - 4096 : undefined,
    });
    // Before serving: a legacy table is migrated and what a crash left is released first.
    log.info(await allocator.reconcile(), 'subid state reconciled');
    const svc = serve({
      nc,
      service: subidService,
      node: config.node,
      version,
      log,
      bindings: createSubidBindings({ allocator }),
      metadata: { mode: config.mode },
      metrics,
    });
    if (metrics) exportPoolUsage(metrics, stores, pool);
    return { stop: () => svc.stop() };
  },
});

/**
 * Allocations and pool usage on scrape: the pool is in memory, the allocations one list of the
 * id records (shared by the three gauges, at most once per STATE_READ_CACHE_MS). In shared mode
 * every container holds the same range, so the ids in use are that range's, counted once.
 */
function exportPoolUsage(metrics: AppMetrics, stores: SubidStores, pool: { size: number }): void {
  const usage = cached(async () => {
    const held = (await stores.ids.list()).filter((r) => r.value.claimed);
    const ranges = new Map(held.map((r) => [r.value.start, r.value.size]));
    const ids = [...ranges.values()].reduce((a, b) => a + b, 0);
    return { allocations: held.length, ids };
  }, STATE_READ_CACHE_MS);
  metrics.state('subidAllocations', async () => (await usage()).allocations);
  metrics.state('subidAllocatedIds', async () => (await usage()).ids);
  metrics.state('subidPoolIds', () => pool.size);
  metrics.state('subidPoolUsage', async () => (await usage()).ids / pool.size);
}
