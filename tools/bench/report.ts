/** Gathers bench-results/<suite>.json into report.md and report.json, and prints the summary. */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { arch, cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { benchOutDir, formatTable, type Figure } from '@sysbox-mgr-ts/bench-kit';

const dir = benchOutDir();
const suites = readdirSync(dir)
  .filter((f) => f.endsWith('.json') && f !== 'report.json')
  .sort()
  .map(
    (f) =>
      JSON.parse(readFileSync(join(dir, f), 'utf8')) as { suite: string; date: string; figures: Figure[] },
  );

const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()} ${arch()}, Node ${process.version}`;
const date = new Date().toISOString();
const md = [
  `# Benchmark report`,
  '',
  `${date} on ${machine}. Every ratio compares with a baseline measured in the same run.`,
  '',
  ...suites.flatMap((s) => [`## ${s.suite}`, '', ...formatTable(s.figures), '']),
].join('\n');
writeFileSync(join(dir, 'report.md'), md);
writeFileSync(join(dir, 'report.json'), `${JSON.stringify({ date, machine, suites }, null, 2)}\n`);
process.stdout.write(`${md}\nreport: ${join(dir, 'report.md')}\n`);
