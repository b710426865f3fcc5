/**
 * Crash at any instant: a seeded minute of concurrent lifecycles while random daemons are
 * SIGKILLed every 1 to 3 s and back half a second later. Afterwards nothing may be left: no
 * record in any bucket, no mount, no dir. Replay a failure with CHAOS_SEED=<printed seed>.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { runChaos } from './chaos.js';
import { startSystem, type System } from './harness.js';

const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));

describe(`chaos (seed ${seed})`, () => {
  let sys: System;
  beforeAll(async () => {
    sys = await startSystem({
      logLevel: 'info',
      args: {
        gateway: [
          '--disable-ovfs-on-idmapped-mount',
          '--long-op-timeout-ms',
          '20000',
          '--orphan-scan-ms',
          '2000',
          '--orphan-grace-ms',
          '5000',
        ],
      },
    });
  });
  afterAll(async () => {
    await sys?.stop();
  });

  it('leaves nothing behind, and most lifecycles survive the kills', async () => {
    onTestFailed(() => void process.stderr.write(`chaos seed ${seed}\n${sys.logs().slice(-200_000)}`));
    const report = await runChaos(sys, {
      seed,
      durationMs: Number(process.env.CHAOS_MS ?? 45_000),
      streams: 2,
      minKillGapMs: 1000,
      maxKillGapMs: 3000,
      downMs: 500,
      settleMs: 30_000,
      log: (l) => process.stdout.write(`chaos: ${l}\n`),
    });
    process.stdout.write(
      `chaos seed ${seed}: ${report.lifecycles} lifecycles, ${report.failed} failed, kills ${JSON.stringify(report.kills)}, ${report.left.length} items left\n` +
        report.failures.map((f) => `  failed: ${f}\n`).join('') +
        report.left.map((l) => `  left: ${l}\n`).join(''),
    );
    expect(report.left).toEqual([]);
    expect(Object.values(report.kills).reduce((a, b) => a + b, 0)).toBeGreaterThan(5);
    expect(report.lifecycles).toBeGreaterThan(10);
  }, 240_000);
});
