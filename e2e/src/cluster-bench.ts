/**
 * Cluster bench: the suite's cluster scenario (two hosts, three members, R3, two member kills),
 * reporting a lifecycle's p99 during the failovers against the healthy p99 of the same run.
 */
import { percentile, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { startClusterScenario } from './cluster-scenario.js';

const out = (l: string) => void process.stdout.write(`${l}\n`);
const scenario = await startClusterScenario({ logLevel: 'info' });
try {
  const r = await scenario.run({ beforeMs: 15_000, afterMs: 15_000 });
  out(`cluster lifecycles: ${r.report}; failed ${r.failures.length}`);
  out(`slow calls and member events:\n${r.slowCalls}`);
  out(`leaders elected after each kill:\n${r.electionReport}`);
  const healthy = [...r.durations.before, ...r.durations.after];
  const figures: Figure[] = [];
  for (const p of [50, 99]) {
    const during = percentile(r.durations.during, p);
    const base = percentile(healthy, p);
    figures.push({
      name: `lifecycle p${p} during two member kills (2 hosts, 3 members, R3)`,
      value: during,
      unit: 'ms',
      baseline: { name: `same run, healthy p${p}`, value: base },
      ratio: during / base,
      better: 'lower',
      runs: r.durations.during.length,
      goal: p === 99 ? '<= 3x' : '',
    });
  }
  // What no client can shorten: nats-server 2.9's raft waits 4 to 9 s before electing.
  const longestElection = Math.max(0, ...r.elections.flat().map((e) => e.afterMs));
  figures.push({
    name: 'longest wait for a new stream or metadata leader after a kill',
    value: longestElection,
    unit: 'ms',
    better: 'lower',
  });
  figures.push({
    name: 'failed lifecycles across the kills',
    value: r.failures.length,
    unit: 'lifecycles',
    better: 'lower',
    goal: '0',
  });
  figures.push({
    name: 'items left after the run',
    value: r.left.length,
    unit: 'items',
    better: 'lower',
    goal: '0',
  });
  await writeFigures('e2e-cluster', figures, out);
} finally {
  await scenario.stop();
}
