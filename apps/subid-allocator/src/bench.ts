/**
 * Allocations per second through NATS with one and with two replicas (exclusive mode, 64 requests
 * in flight), each against the same allocator called in-process in the same run: the baseline
 * pays the same KV compare-and-set writes, so the ratio is the cost of the request/reply hop
 * and, with two replicas, of CAS conflicts between them. Everything runs in this one process.
 */
import { Writable } from 'node:stream';
import type { NatsConnection } from '@nats-io/nats-core';
import { compareRuns, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { SUBID_BLOCK, subidAlloc, subidService, type SubidAlloc } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { createLogger, createServiceClient, serve, type MicroService } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';
import { AllocationTable, TABLE_KEY, createSubidAlloc } from './allocator.js';
import { createSubidBindings } from './service.js';

const quick = process.env.BENCH_QUICK === '1';
const ALLOCS = quick ? 200 : 1000;
const RUNS = quick ? 3 : 7;
const IN_FLIGHT = 64;
const pool = { start: 100000, size: 4096 * SUBID_BLOCK };

const log = createLogger({
  service: 'bench',
  node: 'bench',
  version: '0',
  level: 'warn',
  destination: new Writable({ write: (_c, _e, cb) => cb() }),
});

/** Runs ALLOCS allocations, IN_FLIGHT at a time. */
async function burst(alloc: (id: string) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ALLOCS) await alloc(`c${next++}`);
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
  const storeFor = async (node: string) =>
    createStateStore(await openBucket(await connection(), subidService.bucket), { node, schema: AllocationTable });
  const allocatorFor = async (node: string): Promise<SubidAlloc> =>
    createSubidAlloc({ mode: 'exclusive', pool, store: await storeFor(node) });

  const inProcess = await allocatorFor('local');
  const clearLocal = await storeFor('local');
  const figures: Figure[] = [];

  for (const replicas of [1, 2]) {
    const node = `r${replicas}`;
    for (let i = 0; i < replicas; i++) {
      const nc = await connection();
      const allocator = await allocatorFor(node);
      services.push(serve({ nc, service: subidService, node, version: '0', log, bindings: createSubidBindings({ allocator }) }));
    }
    const client = createServiceClient(await connection(), { node, timeoutMs: 30_000 });
    const clearRemote = await storeFor(node);
    const result = await compareRuns({
      runs: RUNS,
      setup: async () => {
        await clearRemote.delete(TABLE_KEY);
        await clearLocal.delete(TABLE_KEY);
      },
      candidate: () => burst((id) => client.call(subidAlloc, { id, size: SUBID_BLOCK })),
      baseline: () => burst((id) => inProcess.alloc(id, SUBID_BLOCK)),
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
  await writeFigures('subid-allocator', figures, (l) => process.stdout.write(`${l}\n`));
} finally {
  await Promise.all(services.map((s) => s.stop()));
  await Promise.all(connections.map((nc) => nc.close()));
  await ns.stop();
}
