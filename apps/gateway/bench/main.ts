/**
 * Gateway round trip for Register and SubidAlloc (sequential and 32 in flight) with 2,000
 * containers live (registered before the first timed call), against a bare
 * grpc-js server on a unix socket plus a bare NATS request/reply echo, measured alternately in the
 * same run. The gateway's price over the bare transports is its KV reads and CAS writes.
 * The same gateway on an open nats-server (no credentials, no permissions) runs alongside, so
 * the cost of authentication and permission checks is a ratio of the same run. The start-up
 * kernel probes are timed here too (probe-bench.ts).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { percentile, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { createMetricsRegistry } from '@sysbox-mgr-ts/metrics/prometheus';
import { commonOptions, silentLogger, parseConfig } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';
import { startFakeServices } from '../test/fake-services.js';
import { gatewayOptions } from '../src/flags.js';
import { probeFigures } from './probe-bench.js';
import { startSocketFront } from '../src/socket-front.js';
import { startGateway, type GatewaySettings } from '../src/gateway.js';
import { sysboxMgrServiceDefinition } from '../src/codec.js';
import { grpcClient, rpc } from '../test/test-support.js';

const quick = process.env.BENCH_QUICK === '1';
const SEQUENTIAL = quick ? 150 : 1500;
const CONCURRENCY = 32;
const BATCHES = quick ? 4 : 40;
const ROUNDS = 5;
/** Containers registered before the first timed call. */
const LIVE = Number(process.env.BENCH_LIVE ?? (quick ? 200 : 2000));

const log = silentLogger();

interface GatewayRig {
  register(): Promise<void>;
  subid(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A gateway and a fake allocator on a nats-server of their own, authenticated or open; with
 * `metrics`, the gateway records into a registry as with --metrics-address (scraped between rounds).
 */
async function gatewayRig(
  dir: string,
  name: string,
  auth: boolean,
  metrics?: ReturnType<typeof createMetricsRegistry>,
): Promise<GatewayRig> {
  const ns = await startNatsServer({ jetstream: true, ...(auth ? {} : { auth: false }) });
  const nc = await ns.connect(auth ? 'gateway' : undefined);
  // The fakes serve subid as the allocator would, on a connection of its own identity.
  const svcNc = await ns.connect(auth ? 'subid-allocator' : undefined);
  const node = 'bench';
  const fakes = startFakeServices(svcNc, node, log, { only: ['subid'] });
  const parsed = parseConfig(
    { ...commonOptions, ...gatewayOptions },
    [
      '--node',
      node,
      '--socket',
      join(dir, `${name}.sock`),
      '--subuid-file',
      join(dir, 'subid'),
      '--subgid-file',
      join(dir, 'subid'),
    ],
    {},
  );
  if ('help' in parsed) throw new Error('help');
  const gw = await startGateway({
    nc,
    settings: parsed.config as GatewaySettings,
    log,
    metrics: metrics?.forApp('gateway'),
  });
  const client = grpcClient(join(dir, `${name}.sock`));
  let n = 0;
  const registered: string[] = [];
  return {
    async register() {
      const id = `${name}${++n}`;
      await rpc(client, 'Register', {
        id,
        rootfs: dir,
        userns: '',
        netns: '',
        uidMappings: [],
        gidMappings: [],
      });
      registered.push(id);
    },
    async subid() {
      const id = registered.pop();
      if (!id) throw new Error('ran out of registered containers');
      await rpc(client, 'SubidAlloc', { id, size: 65536 });
    },
    async stop() {
      client.close();
      await gw.stop();
      await fakes.stopAll();
      await svcNc.drain();
      await nc.drain();
      await ns.stop();
    },
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gw-bench-'));
  // The fake allocator's blocks, delegated here so the bench runs whatever the host's /etc/subuid holds.
  await writeFile(join(dir, 'subid'), `bench:165536:${2 ** 28}\n`);
  const authed = await gatewayRig(dir, 'auth', true);
  const open = await gatewayRig(dir, 'open', false);
  const registry = createMetricsRegistry();
  const metered = await gatewayRig(dir, 'metered', true, registry);
  const ns = await startNatsServer({ jetstream: false });
  const nc = await ns.connect();

  // Bare gRPC: the same service and messages, every rpc answering at once.
  const bare = new Server();
  const impl: UntypedServiceImplementation = {};
  const service = sysboxMgrServiceDefinition();
  for (const name of Object.keys(service)) {
    impl[name] = (_call: unknown, cb: (e: null, r: object) => void) =>
      cb(null, name === 'SubidAlloc' ? { uid: 165536, gid: 165536 } : {});
  }
  bare.addService(service, impl);
  await new Promise<number>((res, rej) =>
    bare.bindAsync(`unix:${join(dir, 'bare.sock')}`, ServerCredentials.createInsecure(), (e, p) =>
      e ? rej(e) : res(p),
    ),
  );
  const bareClient = grpcClient(join(dir, 'bare.sock'));

  // The same bare server behind the gateway's socket front (socket-front.ts): what the front costs.
  const fronted = new Server();
  fronted.addService(service, impl);
  const injector = fronted.createConnectionInjector(ServerCredentials.createInsecure());
  const front = await startSocketFront({
    socketPath: join(dir, 'front.sock'),
    listenFd: undefined,
    inject: (c) => injector.injectConnection(c),
    log,
  });
  const frontClient = grpcClient(join(dir, 'front.sock'));

  // Bare NATS: a request/reply echo of a subid-sized JSON body.
  const echo = nc.subscribe('bench.echo', {
    callback: (_e, m) => {
      m.respond(m.data);
    },
  });
  const natsBody = new TextEncoder().encode(JSON.stringify({ id: 'bench-container-0000', size: 65536 }));

  const ops = {
    register: () => authed.register(),
    subid: () => authed.subid(),
    openRegister: () => open.register(),
    openSubid: () => open.subid(),
    meteredRegister: () => metered.register(),
    meteredSubid: () => metered.subid(),
    bareGrpc: () => rpc(bareClient, 'SubidAlloc', { id: 'bench-container-0000', size: 65536 }),
    frontGrpc: () => rpc(frontClient, 'SubidAlloc', { id: 'bench-container-0000', size: 65536 }),
    bareNats: () => nc.request('bench.echo', natsBody, { timeout: 5000 }),
  };

  const timeOne = async (fn: () => Promise<unknown>): Promise<number> => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  const sequential = async (fn: () => Promise<unknown>, count: number, out: number[]): Promise<void> => {
    for (let i = 0; i < count; i++) out.push(await timeOne(fn));
  };
  const concurrent = async (fn: () => Promise<unknown>, batches: number, out: number[]): Promise<void> => {
    for (let b = 0; b < batches; b++)
      out.push(...(await Promise.all(Array.from({ length: CONCURRENCY }, () => timeOne(fn)))));
  };

  // The gateways hold LIVE containers before any call is timed, as a busy host's does: a table
  // (KV) of that size is what every Register and SubidAlloc below reads and writes into.
  for (let i = 0; i < LIVE; i += CONCURRENCY)
    await Promise.all(
      Array.from({ length: CONCURRENCY }, () =>
        Promise.all([authed.register(), open.register(), metered.register()]),
      ),
    );

  // Warm up every path.
  for (let i = 0; i < 50; i++) {
    await ops.register();
    await ops.subid();
    await ops.openRegister();
    await ops.openSubid();
    await ops.meteredRegister();
    await ops.meteredSubid();
    await ops.bareGrpc();
    await ops.frontGrpc();
    await ops.bareNats();
  }

  const OPS = [
    'register',
    'subid',
    'grpc',
    'front',
    'nats',
    'openRegister',
    'openSubid',
    'meteredRegister',
    'meteredSubid',
  ] as const;
  const noSamples = () =>
    Object.fromEntries(OPS.map((op) => [op, []])) as unknown as Record<(typeof OPS)[number], number[]>;
  const samples = { seq: noSamples(), conc: noSamples() };
  for (let round = 0; round < ROUNDS; round++) {
    const per = Math.ceil(SEQUENTIAL / ROUNDS);
    const batches = Math.ceil(BATCHES / ROUNDS);
    await sequential(ops.register, per, samples.seq.register);
    await sequential(ops.bareGrpc, per, samples.seq.grpc);
    await sequential(ops.frontGrpc, per, samples.seq.front);
    await sequential(ops.subid, per, samples.seq.subid);
    await sequential(ops.bareNats, per, samples.seq.nats);
    await sequential(ops.openRegister, per, samples.seq.openRegister);
    await sequential(ops.openSubid, per, samples.seq.openSubid);
    await sequential(ops.meteredRegister, per, samples.seq.meteredRegister);
    await sequential(ops.meteredSubid, per, samples.seq.meteredSubid);
    // A scrape per round, as Prometheus would every 15 s: its cost lands in the run.
    await registry.text();
    await concurrent(ops.register, batches, samples.conc.register);
    await concurrent(ops.bareGrpc, batches, samples.conc.grpc);
    await concurrent(ops.frontGrpc, batches, samples.conc.front);
    await concurrent(ops.subid, batches, samples.conc.subid);
    await concurrent(ops.bareNats, batches, samples.conc.nats);
  }

  const figures: Figure[] = [];
  for (const mode of ['seq', 'conc'] as const) {
    const label = mode === 'seq' ? 'sequential' : `${CONCURRENCY} in flight`;
    for (const p of [50, 99]) {
      const base = percentile(samples[mode].grpc, p) + percentile(samples[mode].nats, p);
      for (const op of ['register', 'subid'] as const) {
        const value = percentile(samples[mode][op], p);
        figures.push({
          name: `${op === 'register' ? 'Register' : 'SubidAlloc'} p${p}, ${label}`,
          value,
          unit: 'ms',
          baseline: { name: `bare gRPC p${p} + bare NATS p${p}`, value: base },
          ratio: value / base,
          better: 'lower',
          runs: samples[mode][op].length,
          goal: '<= 2x',
        });
      }
    }
  }
  // What the socket front (authority rewrite, pass-through for these clients) adds to a bare gRPC call.
  for (const mode of ['seq', 'conc'] as const) {
    for (const p of [50, 99]) {
      const value = percentile(samples[mode].front, p);
      const base = percentile(samples[mode].grpc, p);
      figures.push({
        name: `bare gRPC through the socket front p${p}, ${mode === 'seq' ? 'sequential' : `${CONCURRENCY} in flight`}`,
        value,
        unit: 'ms',
        baseline: { name: `bare gRPC p${p}`, value: base },
        ratio: value / base,
        better: 'lower',
        runs: samples[mode].front.length,
        goal: p === 50 ? '<= 1.1x' : '',
      });
    }
  }
  // What authentication and permission checks cost: the same calls on an open server, same run.
  for (const p of [50, 99]) {
    for (const [op, open] of [
      ['register', 'openRegister'],
      ['subid', 'openSubid'],
    ] as const) {
      const value = percentile(samples.seq[op], p);
      const base = percentile(samples.seq[open], p);
      figures.push({
        name: `${op === 'register' ? 'Register' : 'SubidAlloc'} p${p}, sequential, authenticated`,
        value,
        unit: 'ms',
        baseline: { name: `same on an open nats-server p${p}`, value: base },
        ratio: value / base,
        better: 'lower',
        runs: samples.seq[op].length,
        goal: p === 50 ? '<= 1.1x' : '',
      });
    }
  }
  // What metrics cost (issue #28): the same authenticated gateway recording into a registry.
  for (const p of [50, 99]) {
    for (const [op, off] of [
      ['meteredRegister', 'register'],
      ['meteredSubid', 'subid'],
    ] as const) {
      const value = percentile(samples.seq[op], p);
      const base = percentile(samples.seq[off], p);
      figures.push({
        name: `${op === 'meteredRegister' ? 'Register' : 'SubidAlloc'} p${p}, sequential, metrics on`,
        value,
        unit: 'ms',
        baseline: { name: `same gateway without metrics p${p}`, value: base },
        ratio: value / base,
        better: 'lower',
        runs: samples.seq[op].length,
        goal: p === 50 ? '<= 1.05x' : '',
      });
    }
  }
  figures.push(...(await probeFigures(dir, quick ? 5 : 30)));
  await writeFigures('gateway', figures, (l) => process.stdout.write(`${l}\n`));

  bareClient.close();
  bare.forceShutdown();
  frontClient.close();
  fronted.forceShutdown();
  await front.close();
  echo.unsubscribe();
  await authed.stop();
  await open.stop();
  await metered.stop();
  await nc.drain();
  await ns.stop();
  await rm(dir, { recursive: true, force: true });
}

await main();
