/**
 * Start-up probe times (#15: each probe must stay under 200 ms), measured here rather than asserted
 * in tests, where a loaded CI machine makes any wall-clock bound flaky. The same-run baseline is
 * the floor of a probe that needs a user namespace: starting `unshare --user true` and waiting for it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { summarize, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec/run';
import {
  idMapMountSupported,
  overlayfsOnIdMapMountSupported,
  shiftfsOnOverlayfsSupported,
  shiftfsSupported,
  type ProbeResult,
} from '@sysbox-mgr-ts/host-native';

export async function probeFigures(parent: string, runs: number): Promise<Figure[]> {
  const dir = await mkdtemp(join(parent, 'probes-'));
  const bareUserns = async (): Promise<number> => {
    const t0 = performance.now();
    await run('unshare', ['--user', '--', 'true'], { timeout: 5000 });
    return performance.now() - t0;
  };
  const probes: [string, () => Promise<ProbeResult>][] = [
    ['IDMapMountSupported', () => idMapMountSupported(dir)],
    ['OverlayfsOnIDMapMountSupported', () => overlayfsOnIdMapMountSupported(dir)],
    ['ShiftfsSupported', () => shiftfsSupported(dir)],
    ['ShiftfsOnOverlayfsSupported', () => shiftfsOnOverlayfsSupported(dir)],
  ];
  const baseline: number[] = [];
  const times = new Map<string, number[]>(probes.map(([name]) => [name, []]));
  const answers = new Map<string, ProbeResult>();
  for (let i = 0; i < runs; i++) {
    baseline.push(await bareUserns());
    for (const [name, probe] of probes) {
      const r = await probe();
      times.get(name)!.push(r.ms);
      answers.set(name, r);
    }
  }
  await rm(dir, { recursive: true, force: true });
  const base = summarize(baseline).median;
  return probes.map(([name]) => {
    const s = summarize(times.get(name)!);
    const a = answers.get(name)!;
    return {
      name: `probe ${name} (answered ${a.ok ? 'yes' : `no, at ${a.reason?.split(':')[0]}`})`,
      value: s.median,
      unit: 'ms',
      baseline: { name: 'run unshare --user true', value: base },
      ratio: s.median / base,
      better: 'lower',
      runs: s.runs,
      goal: '< 200 ms (absolute)',
    };
  });
}
