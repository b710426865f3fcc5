/**
 * sysbox-fleet on a simulated fleet (#28): FLEET_BENCH_NODES nodes (100) of FLEET_BENCH_CONTAINERS
 * containers (2,000) each, every node's four services answering `$SRV` and their lists from a
 * child process (pages encoded once at start; in a fleet they answer from their own hosts), on a
 * real authenticated nats-server; the inventory runs in this process with the monitor identity.
 *
 * Two modes, each against its baseline, same run, alternated with the candidate: the same NATS
 * requests done bare (the same discovery with the same quiet time, then as answers arrive each
 * node's four summaries (default mode) or its list pages (--containers), replies not decoded).
 * The ratio is what decoding, validating and joining the replies add.
 */
import { fileURLToPath } from 'node:url';
import type { Msg, NatsConnection } from '@nats-io/nats-core';
import { compareRuns, timeRuns, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import {
  LIST_MAX_LIMIT,
  SUBID_LIST_MAX_LIMIT,
  rootfsList,
  rootfsSummary,
  shiftfsList,
  shiftfsSummary,
  subidList,
  subidSummary,
  volList,
  volSummary,
} from '@sysbox-mgr-ts/contracts';
import { startProcess } from '@sysbox-mgr-ts/exec';
import {
  connectNats,
  decodeJson,
  encodeJson,
  silentLogger,
  type MicroService,
} from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';
import { fleetReport } from '../src/app.js';
import { formatJson, formatTable } from '../src/format.js';
import { simNode, startRawSimNode } from '../test/sim-node.js';

const quick = process.env.BENCH_QUICK === '1';
const NODES = Number(process.env.FLEET_BENCH_NODES ?? 100);
const CONTAINERS = Number(process.env.FLEET_BENCH_CONTAINERS ?? 2000);
const RUNS = quick ? 3 : 7;
const DISCOVERY_MS = 200;
const TIMEOUT_MS = 60_000;
/**
 * Connections the simulated fleet serves on: each node's four services hold 44 subscriptions (two
 * endpoints and nine `$SRV` subjects each), and a connection may hold 1,024.
 */
const SERVER_CONNECTIONS = 8;

const say = (line: string): void => void process.stdout.write(`${line}\n`);

/** The child: every simulated node, until SIGTERM. */
async function serveSimulatedFleet(url: string, creds: string): Promise<void> {
  const log = silentLogger();
  const servers: NatsConnection[] = [];
  for (let i = 0; i < SERVER_CONNECTIONS; i++)
    servers.push(await connectNats({ natsUrl: url, natsCreds: creds }, 'operator', 'fleet-bench-sim', log));
  // A simulated connection refused something (too many subscriptions made nodes vanish): said.
  for (const [i, s] of servers.entries())
    void (async () => {
      for await (const st of s.status())
        if (st.type === 'error') say(`sim connection ${i}: ${String((st as { error?: unknown }).error)}`);
    })();
  const services: MicroService[] = [];
  for (let n = 0; n < NODES; n++) {
    const node = `node-${String(n).padStart(3, '0')}`;
    services.push(...startRawSimNode(servers[n % SERVER_CONNECTIONS]!, simNode(node, CONTAINERS), '0.1.0'));
  }
  await Promise.all(servers.map((s) => s.flush()));
  say('ready');
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  await Promise.all(services.map((s) => s.stop()));
  await Promise.all(servers.map((s) => s.close()));
}

if (process.argv.includes('--serve-sim')) {
  await serveSimulatedFleet(process.env.FLEET_SIM_URL!, process.env.FLEET_SIM_CREDS!);
  process.exit(0);
}

const ns = await startNatsServer({ jetstream: false });
let sim: ReturnType<typeof startProcess> | undefined;
let monitor: NatsConnection | undefined;
try {
  const t0 = performance.now();
  sim = startProcess(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--serve-sim'], {
    env: { FLEET_SIM_URL: ns.url, FLEET_SIM_CREDS: ns.credentials('operator') },
  });
  let simOut = '';
  await new Promise<void>((resolve, reject) => {
    sim!.stdout!.on('data', (c: Buffer) => {
      simOut += c.toString();
      if (simOut.includes('ready')) resolve();
    });
    void sim!.then((r) =>
      reject(new Error(`simulated fleet exited: ${r.exitCode}\n${simOut}${r.stderr ?? ''}`)),
    );
  });
  say(`${NODES} simulated nodes x ${CONTAINERS} containers up in ${Math.round(performance.now() - t0)} ms`);
  sim.stdout!.on('data', (c: Buffer) => process.stdout.write(c));

  monitor = await ns.connect('monitor');
  const nc = monitor;

  /** The inventory's requests, bare: same discovery, same summaries or pages, nothing decoded. */
  const bare = async (mode: 'summary' | 'containers'): Promise<number> => {
    let bytes = 0;
    const lists: Promise<void>[] = [];
    const seen = new Set<string>();
    const one = async (subject: string): Promise<void> => {
      bytes += (await nc.request(subject, encodeJson({}), { timeout: TIMEOUT_MS })).data.length;
    };
    const pages = async (subject: string, request: Record<string, unknown>): Promise<void> => {
      let cursor: string | undefined;
      do {
        const m: Msg = await nc.request(subject, encodeJson({ ...request, ...(cursor ? { cursor } : {}) }), {
          timeout: TIMEOUT_MS,
        });
        bytes += m.data.length;
        // The cursor is all a bare client must read to ask for the next page.
        const tail = new TextDecoder().decode(m.data.subarray(Math.max(0, m.data.length - 300)));
        cursor = /"next":"([^"]+)"\}$/.exec(tail)?.[1];
      } while (cursor !== undefined);
    };
    const answers = await nc.requestMany('$SRV.STATS', undefined, {
      strategy: 'stall',
      stall: DISCOVERY_MS,
      maxWait: TIMEOUT_MS,
    });
    for await (const m of answers) {
      bytes += m.data.length;
      const node = (decodeJson(m.data) as { metadata: { node: string } }).metadata.node;
      if (seen.has(node)) continue;
      seen.add(node);
      if (mode === 'summary')
        lists.push(
          ...[subidSummary, volSummary, shiftfsSummary, rootfsSummary].map((c) => one(c.subject(node))),
        );
      else
        lists.push(
          pages(subidList.subject(node), { limit: SUBID_LIST_MAX_LIMIT }),
          pages(volList.subject(node), { limit: LIST_MAX_LIMIT, sizes: false }),
          pages(shiftfsList.subject(node), { limit: LIST_MAX_LIMIT }),
          pages(rootfsList.subject(node), { limit: LIST_MAX_LIMIT }),
        );
    }
    await Promise.all(lists);
    return bytes;
  };

  const options = { timeoutMs: TIMEOUT_MS, discoveryMs: DISCOVERY_MS };
  // Once each, to check what the inventory read before timing it.
  const summary = await fleetReport(nc, options);
  if (summary.totals.nodes !== NODES || summary.totals.subidRanges !== NODES * CONTAINERS)
    throw new Error(`summary saw ${summary.totals.nodes} nodes, ${summary.totals.subidRanges} subid ranges`);
  if (summary.totals.servicesNotOk !== 0) throw new Error(`${summary.totals.servicesNotOk} services not ok`);
  const report = await fleetReport(nc, { ...options, containers: true });
  if (report.totals.nodes !== NODES || report.totals.containers !== NODES * CONTAINERS)
    throw new Error(`inventory saw ${report.totals.nodes} nodes, ${report.totals.containers} containers`);
  if (report.totals.servicesNotOk !== 0) throw new Error(`${report.totals.servicesNotOk} services not ok`);
  const summaryBytes = await bare('summary');
  const bytes = await bare('containers');
  say(
    `one inventory reads ${(summaryBytes / 2 ** 10).toFixed(1)} KiB of replies (summaries), ` +
      `${(bytes / 2 ** 20).toFixed(1)} MiB with --containers`,
  );

  /** A timed default run, checked: a run that missed a node would time less than the inventory. */
  const checkedSummary = async () => {
    const r = await fleetReport(nc, options);
    if (r.totals.nodes !== NODES) throw new Error(`a timed run saw ${r.totals.nodes} nodes`);
    return r;
  };
  const byDefault = await compareRuns({
    runs: RUNS,
    candidate: checkedSummary,
    baseline: () => bare('summary'),
  });
  const inventory = await compareRuns({
    runs: RUNS,
    candidate: () => fleetReport(nc, { ...options, containers: true }),
    baseline: () => bare('containers'),
  });
  const table = await timeRuns(() => formatTable(report), RUNS);
  const json = await timeRuns(() => formatJson(report), RUNS);
  const scale = `${NODES} nodes x ${CONTAINERS} containers`;
  const figures: Figure[] = [
    {
      name: `inventory, default (discovery + each service's summary), ${scale}`,
      value: byDefault.candidate.median,
      unit: 'ms',
      baseline: { name: 'the same requests bare, replies not decoded', value: byDefault.baseline.median },
      ratio: byDefault.ratio,
      spread: byDefault.candidate.spread,
      runs: byDefault.candidate.runs,
      goal: 'well under 1 s',
    },
    {
      name: `inventory --containers (discovery + every list, joined), ${scale}`,
      value: inventory.candidate.median,
      unit: 'ms',
      baseline: { name: 'the same requests bare, replies not decoded', value: inventory.baseline.median },
      ratio: inventory.ratio,
      spread: inventory.candidate.spread,
      runs: inventory.candidate.runs,
    },
    {
      name: `discovery quiet time inside both (ends discovery)`,
      value: DISCOVERY_MS,
      unit: 'ms',
    },
    {
      name: `table output --containers, ${scale}`,
      value: table.median,
      unit: 'ms',
      spread: table.spread,
      runs: table.runs,
    },
    {
      name: `--json --containers output, ${scale}`,
      value: json.median,
      unit: 'ms',
      spread: json.spread,
      runs: json.runs,
    },
  ];
  await writeFigures('fleet', figures, say);
} finally {
  await monitor?.close();
  sim?.kill('SIGTERM');
  await sim;
  await ns.stop();
}
