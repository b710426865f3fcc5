/**
 * Our shift against GNU `chown -R --no-dereference` on identical trees, in the same run, on tmpfs
 * and on the disk (/var/tmp). BENCH_QUICK=1 shrinks the tree for a smoke run. Our shift runs with
 * its defaults (ACLs on, what callers get); BENCH_ACLS_OFF=1 adds a run with `acls: false`.
 *
 * The baseline chowns tree B to a fixed owner, alternating between two so every run changes every
 * inode, as the shift does on tree A (alternating +offset / -offset). Entry counts match exactly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareRuns, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec';
import { shift } from '../src/index.js';
import { BENCH_TREE, buildTree } from '../test/tree.js';

const quick = process.env.BENCH_QUICK === '1';
const spec = { ...BENCH_TREE, top: quick ? 8 : BENCH_TREE.top, outside: '/etc/hostname' };
const runs = quick ? 2 : 4;
const OFFSET = 100_000;

async function benchOn(label: string, base: string, figures: Figure[]): Promise<void> {
  const ours = join(base, 'ours');
  const theirs = join(base, 'chown');
  const entries = buildTree(ours, spec);
  buildTree(theirs, spec);
  for (const acls of process.env.BENCH_ACLS_OFF === '1' ? [true, false] : [true]) {
    let up = true;
    let chownTo = 0;
    const r = await compareRuns({
      runs,
      candidate: async () => {
        await shift(ours, up ? OFFSET : -OFFSET, up ? OFFSET : -OFFSET, { acls });
        up = !up;
      },
      baseline: async () => {
        chownTo = chownTo === OFFSET ? 0 : OFFSET;
        await run('chown', ['-R', '--no-dereference', `${chownTo}:${chownTo}`, theirs], { timeout: 120_000 });
      },
    });
    const what = `shift ${entries} entries (${label}${acls ? '' : ', acls: false'})`;
    figures.push({
      name: what,
      value: r.candidate.median,
      unit: 'ms',
      baseline: { name: 'chown -R --no-dereference', value: r.baseline.median },
      ratio: r.ratio,
      better: 'lower',
      spread: r.candidate.spread,
      runs,
      goal: '<= 1.0x chown -R',
    });
    figures.push({
      name: `${what} throughput`,
      value: entries / (r.candidate.median / 1000),
      unit: 'entries/s',
      baseline: { name: 'chown -R --no-dereference', value: entries / (r.baseline.median / 1000) },
      ratio: r.baseline.median / r.candidate.median,
      better: 'higher',
      runs,
    });
  }
}

async function main(): Promise<void> {
  const figures: Figure[] = [];
  const tmpfsDir = mkdtempSync(join(tmpdir(), 'id-shift-bench-'));
  const diskDir = mkdtempSync(join('/var/tmp', 'id-shift-bench-'));
  let mounted = false;
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1g', 'id-shift-bench', tmpfsDir], { timeout: 10_000 });
    mounted = true;
    await benchOn('tmpfs', tmpfsDir, figures);
    await benchOn('disk', diskDir, figures);
  } finally {
    if (mounted) await run('umount', [tmpfsDir], { timeout: 30_000 });
    rmSync(tmpfsDir, { recursive: true, force: true });
    rmSync(diskDir, { recursive: true, force: true });
  }
  await writeFigures('id-shift', figures, (line) => process.stdout.write(`${line}\n`));
}

await main();
