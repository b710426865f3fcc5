/**
 * Chaos bench: the suite's chaos run, longer (CHAOS_MS, default 10 minutes; BENCH_QUICK=1: 1
 * minute), reporting kills, lifecycles, the share that failed and what was left. The same-run
 * baseline is the same streams for a fifth of the time with no kill: what fails without chaos.
 */
import { writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { runChaos, type ChaosOptions } from './chaos.js';
import { startSystem } from './harness.js';

const quick = process.env.BENCH_QUICK === '1';
const durationMs = Number(process.env.CHAOS_MS ?? (quick ? 60_000 : 600_000));
const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const out = (l: string) => void process.stdout.write(`${l}\n`);

const gatewayArgs = [
  '--disable-ovfs-on-idmapped-mount',
  '--long-op-timeout-ms',
  '20000',
  '--orphan-scan-ms',
  '2000',
  '--orphan-grace-ms',
  '5000',
];
const common: Omit<ChaosOptions, 'durationMs' | 'minKillGapMs' | 'maxKillGapMs'> = {
  seed,
  streams: 2,
  downMs: 500,
  settleMs: 60_000,
};

async function once(opts: ChaosOptions) {
  const sys = await startSystem({ logLevel: 'info', args: { gateway: gatewayArgs } });
  try {
    return await runChaos(sys, opts);
  } finally {
    await sys.stop();
  }
}

out(`chaos bench seed ${seed}, ${durationMs} ms`);
// No kill: a gap longer than the run.
const calm = await once({
  ...common,
  durationMs: durationMs / 5,
  minKillGapMs: 10 * durationMs,
  maxKillGapMs: 10 * durationMs,
});
const chaos = await once({ ...common, durationMs, minKillGapMs: 1000, maxKillGapMs: 3000 });
const kills = Object.values(chaos.kills).reduce((a, b) => a + b, 0);
const pct = (r: { failed: number; lifecycles: number }) => (100 * r.failed) / Math.max(1, r.lifecycles);
const figures: Figure[] = [
  {
    name: `lifecycles under chaos (seed ${seed}, ${kills} kills: ${JSON.stringify(chaos.kills)})`,
    value: chaos.lifecycles,
    unit: 'lifecycles',
    better: 'higher',
    goal: '1000 with a kill every ~2 s',
  },
  {
    name: 'failed lifecycles under chaos',
    value: pct(chaos),
    unit: '%',
    baseline: { name: 'same streams, no kill', value: pct(calm) },
    better: 'lower',
    goal: '< 5%',
  },
  {
    name: 'items left after the settle (records, mounts, dirs)',
    value: chaos.left.length,
    unit: 'items',
    better: 'lower',
    goal: '0',
  },
];
for (const l of chaos.left) out(`left: ${l}`);
await writeFigures('e2e-chaos', figures, out);
