/**
 * Issue #25: a host with history. The same live set after N and after 5N container lifecycles
 * through the whole system: every bucket holds the same messages, bytes and keys (what every list
 * and every daemon's start-up reads), within a small slack, and the services list the live set.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { startSystem, type System } from './harness.js';
import { HISTORY_GATEWAY_ARGS, historyRig, type BucketCounts, type HistoryRig } from './history.js';
import { servicesState } from './runtime.js';

const N = Number(process.env.HISTORY_SOAK_N ?? 300);
const LIVE = 3;
const CONCURRENCY = 8;

describe('a host with history (#25)', () => {
  let sys: System;
  let rig: HistoryRig;

  beforeAll(async () => {
    sys = await startSystem({ logLevel: 'info', args: { gateway: HISTORY_GATEWAY_ARGS } });
    rig = historyRig(sys);
  });
  afterAll(async () => {
    rig?.close();
    await sys?.stop();
  });

  it(`state stays bounded by the live set: ${N} and then ${5 * N} lifecycles beside ${LIVE} live containers`, async () => {
    onTestFailed(() => void process.stderr.write(sys.logs().slice(-20_000)));
    for (let i = 0; i < LIVE; i++) await rig.startLive(`live-${i}`);
    await rig.lifecycles('a', N, CONCURRENCY);
    const atN = await rig.counts();
    await rig.lifecycles('b', 4 * N, CONCURRENCY);
    const at5N = await rig.counts();
    process.stdout.write(`bucket counts after ${N} and ${5 * N} lifecycles:\n`);
    for (const [i, c] of at5N.entries())
      process.stdout.write(`  ${JSON.stringify(atN[i])} -> ${JSON.stringify(c)}\n`);

    const bounded = (c: BucketCounts, base: BucketCounts) => ({
      bucket: c.bucket,
      messages: c.messages <= base.messages + 2,
      bytes: c.bytes <= base.bytes + 1024,
      subjects: c.subjects <= base.subjects + 2,
    });
    for (const [i, c] of at5N.entries())
      expect(bounded(c, atN[i]!)).toEqual({ bucket: c.bucket, messages: true, bytes: true, subjects: true });
    // Nothing of the history is left behind: the keys are those of the live set.
    const keys = at5N.reduce((n, c) => n + c.subjects, 0);
    expect(keys).toBeLessThanOrEqual(LIVE * 4);

    const state = await servicesState(sys);
    expect(state.subid.allocations.map((a) => a.id).sort()).toEqual(['live-0', 'live-1', 'live-2']);
    expect(state.vol.volumes.map((v) => v.id).sort()).toEqual(['live-0', 'live-1', 'live-2']);
    // 1,500 lifecycles took 51 s on a loaded 2-core machine (about 30 a second, 8 at a time).
  }, 300_000);
});
