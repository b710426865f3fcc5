/**
 * Two hosts on a three-member JetStream cluster (see cluster-scenario.ts): every lifecycle must
 * succeed across two member kills, nothing may be left behind, and the latency of a lifecycle
 * before, during and after the failovers is printed.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { startClusterScenario, type ClusterScenario } from './cluster-scenario.js';

describe('two hosts on a three-member JetStream cluster, members killed mid-run', () => {
  let scenario: ClusterScenario;
  beforeAll(async () => {
    scenario = await startClusterScenario();
  }, 120_000);
  afterAll(async () => {
    await scenario?.stop();
  });

  it('runs every lifecycle to the end across two member kills and leaves nothing behind', async () => {
    onTestFailed(() => void process.stderr.write(scenario.logs()));
    const r = await scenario.run();
    process.stdout.write(
      `cluster lifecycles: ${r.report}; failed ${r.failures.length}\nslow calls and member events:\n${r.slowCalls}\nleaders elected after each kill:\n${r.electionReport}\n`,
    );
    expect(r.failures).toEqual([]);
    for (const phase of ['before', 'during', 'after'] as const)
      expect(r.durations[phase].length, phase).toBeGreaterThan(0);
    expect(r.left).toEqual([]);
    // The kills did cost leaders (the members' logs say which and when), so failover was exercised.
    expect(r.elections.flat().length).toBeGreaterThan(0);
  }, 180_000);
});
