/**
 * The subid allocator through NATS, everything in this one process, each figure against a
 * baseline from the same run:
 *
 * - Allocations per second with one and with two replicas (exclusive mode, 64 requests in
 *   flight) against the same allocator called in-process: the ratio is the cost of the
 *   request/reply hop and, with two replicas, of claims they race for.
 * - SubidAlloc p50 (one request at a time) on a node holding 2,000 live containers against one
 *   holding 10, samples interleaved: per-key state should make the ratio about 1.
 * - A node's whole pool, 65,000 blocks of 65536 ids (the most that fit under 2^32 above the
 *   pool start; 100,000 blocks would need 6.5e9 ids), allocated through NATS until `exhausted`;
 *   then what a full node costs: an `exhausted` answer (it reads every claim), the first list
 *   page, and the start reconcile of a fresh replica.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { compareRuns, percentile, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import {
  SUBID_BLOCK,
  subidAlloc,
  subidFree,
  subidList,
  subidService,
  type SubidAlloc,
} from '@sysbox-mgr-ts/contracts';
import { silentLogger, createServiceClient, serve, type MicroService } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';
import { createSubidAlloc, type SubidAllocator } from '../src/allocator.js';
import { createSubidBindings } from '../src/service.js';
import { openSubidStores } from '../src/subid-store.js';

const quick = process.env.BENCH_QUICK === '1';
const ALLOCS = quick ? 200 : 1000;
const RUNS = quick ? 3 : 7;
const IN_FLIGHT = 64;
const LIVE = { few: 10, many: 2000 } as const;
const LATENCY_SAMPLES = quick ? 100 : 500;
const FULL_POOL_BLOCKS = quick ? 2000 : 65_000;
const pool = { start: 100000, size: 4096 * SUBID_BLOCK };

const log = silentLogger();

/** Runs `count` calls of `fn`, `IN_FLIGHT` at a time. */
async function burst(count: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

const ns = await startNatsServer({ jetstream: true });
const connections: NatsConnection[] = [];
const services: MicroService[] = [];
try {
  const connection = async () => {
    const nc = await ns.connect();
    connections.push(nc);
    return nc;
  };
  const allocatorFor = async (node: string, poolOf = pool): Promise<SubidAllocator> =>
    createSubidAlloc({
      mode: 'exclusive',
      pool: poolOf,
      stores: await openSubidStores(await connection(), { node }),
      log,
    });
  /** `replicas` services of one node, each on its own connection with its own allocator; answers a client. */
  const serveNode = async (node: string, replicas: number, poolOf = pool) => {
    for (let i = 0; i < replicas; i++) {
      const allocator = await allocatorFor(node, poolOf);
      await allocator.reconcile();
      services.push(
        serve({
          nc: await connection(),
          service: subidService,
          node,
          version: '0',
          log,
          bindings: createSubidBindings({ allocator }),
        }),
      );
    }
    return createServiceClient(await connection(), { node, timeoutMs: 30_000 });
  };
  const figures: Figure[] = [];

  // ---- Throughput, 1 and 2 replicas, against the allocator in-process. ----
  const inProcess: SubidAlloc = await allocatorFor('local');
  for (const replicas of [1, 2]) {
    const client = await serveNode(`r${replicas}`, replicas);
    let round = 0;
    const ids = () => Array.from({ length: ALLOCS }, (_, i) => `c${round}-${i}`);
    const result = await compareRuns({
      runs: RUNS,
      // Each timed burst starts from an empty node: the previous burst's ids are freed, untimed.
      setup: async () => {
        const previous = ids();
        round++;
        await burst(ALLOCS, (i) => client.call(subidFree, { id: previous[i]! }).catch(() => undefined));
        await burst(ALLOCS, (i) => inProcess.free(previous[i]!).catch(() => undefined));
      },
      candidate: () =>
        burst(ALLOCS, (i) => client.call(subidAlloc, { id: `c${round}-${i}`, size: SUBID_BLOCK })),
      baseline: () => burst(ALLOCS, (i) => inProcess.alloc(`c${round}-${i}`, SUBID_BLOCK)),
    });
    const perSecond = (ms: number) => (ALLOCS * 1000) / ms;
    figures.push({
      name: `exclusive allocs through NATS, ${replicas} replica${replicas > 1 ? 's' : ''} (${ALLOCS} allocs, ${IN_FLIGHT} in flight)`,
      value: perSecond(result.candidate.median),
      unit: 'allocs/s',
      baseline: { name: 'allocator in-process, same KV', value: perSecond(result.baseline.median) },
      ratio: perSecond(result.candidate.median) / perSecond(result.baseline.median),
      better: 'higher',
      spread: result.candidate.spread,
      runs: RUNS,
    });
  }

  // ---- SubidAlloc p50 with 2,000 live containers against 10. ----
  const clients = { few: await serveNode('live-few', 1), many: await serveNode('live-many', 1) };
  for (const kind of ['few', 'many'] as const) {
    await burst(LIVE[kind], (i) => clients[kind].call(subidAlloc, { id: `live${i}`, size: SUBID_BLOCK }));
  }
  const samples = { few: [] as number[], many: [] as number[] };
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    // Interleaved, so drift in machine load hits both alike; each new container is freed again
    // (untimed) so the live count stays put.
    for (const kind of i % 2 ? (['few', 'many'] as const) : (['many', 'few'] as const)) {
      const id = `probe${i}`;
      const t0 = performance.now();
      await clients[kind].call(subidAlloc, { id, size: SUBID_BLOCK });
      samples[kind].push(performance.now() - t0);
      await clients[kind].call(subidFree, { id });
    }
  }
  const p50 = { few: percentile(samples.few, 50), many: percentile(samples.many, 50) };
  figures.push({
    name: `SubidAlloc p50 through NATS, ${LIVE.many} live containers (sequential, ${LATENCY_SAMPLES} samples)`,
    value: p50.many,
    unit: 'ms',
    baseline: { name: `same with ${LIVE.few} live containers`, value: p50.few },
    ratio: p50.many / p50.few,
    better: 'lower',
    goal: '<= 1.2',
  });

  // ---- A whole pool of 65,000 blocks, then what a full node costs. ----
  const fullPool = { start: 100000, size: FULL_POOL_BLOCKS * SUBID_BLOCK };
  const full = await serveNode('full', 1, fullPool);
  const failures: unknown[] = [];
  const t0 = performance.now();
  await burst(FULL_POOL_BLOCKS, (i) =>
    full
      .call(subidAlloc, { id: `f${i}`, size: SUBID_BLOCK })
      .catch((err: unknown) => void failures.push(err)),
  );
  const fillMs = performance.now() - t0;
  if (failures.length > 0)
    throw new Error(
      `${failures.length} of ${FULL_POOL_BLOCKS} allocations failed, first: ${String(failures[0])}`,
    );
  const t1 = performance.now();
  const refused = await full.call(subidAlloc, { id: 'one-too-many', size: SUBID_BLOCK }).then(
    () => 'granted',
    (err: { code?: string }) => err.code,
  );
  const exhaustedMs = performance.now() - t1;
  if (refused !== 'exhausted')
    throw new Error(`allocation past a full pool answered ${refused}, not exhausted`);
  const t2 = performance.now();
  const firstPage = await full.call(subidList, {});
  const listMs = performance.now() - t2;
  const freshReplica = await allocatorFor('full', fullPool);
  const t3 = performance.now();
  const report = await freshReplica.reconcile();
  const reconcileMs = performance.now() - t3;
  if (report.claimedBlocks !== FULL_POOL_BLOCKS)
    throw new Error(`reconcile read ${report.claimedBlocks} claims, not ${FULL_POOL_BLOCKS}`);
  const baselineRate = figures[0]!.value;
  figures.push(
    {
      name: `exclusive allocs through NATS, 1 replica, filling a pool of ${FULL_POOL_BLOCKS} blocks to exhausted (${IN_FLIGHT} in flight, 0 errors)`,
      value: (FULL_POOL_BLOCKS * 1000) / fillMs,
      unit: 'allocs/s',
      baseline: { name: `same on an empty node (${ALLOCS} allocs)`, value: baselineRate },
      ratio: (FULL_POOL_BLOCKS * 1000) / fillMs / baselineRate,
      better: 'higher',
    },
    {
      name: `one alloc answered exhausted on the full node (reads ${FULL_POOL_BLOCKS} claims)`,
      value: exhaustedMs,
      unit: 'ms',
    },
    {
      name: `first list page (${firstPage.allocations.length} allocations) on the full node`,
      value: listMs,
      unit: 'ms',
    },
    { name: `start reconcile of a new replica on the full node`, value: reconcileMs, unit: 'ms' },
  );
  process.stdout.write(`filled ${FULL_POOL_BLOCKS} blocks in ${(fillMs / 1000).toFixed(1)} s\n`);
  await writeFigures('subid-allocator', figures, (l) => process.stdout.write(`${l}\n`));
} finally {
  await Promise.all(services.map((s) => s.stop()));
  await Promise.all(connections.map((nc) => nc.close()));
  await ns.stop();
}
