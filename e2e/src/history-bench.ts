/**
 * Soak bench (#25): the whole system after a history of container lifecycles, with the same live
 * set, at history x1 and x10. For each live-set size: start the live containers, run L/10
 * lifecycles, measure; run the rest up to L, measure again. Figures: the buckets' bytes, list p50
 * (vol.list and the other services' lists, over NATS), each daemon's start time (stopped with
 * SIGTERM and started again), each daemon's RSS and open fds (before that restart). A list p50
 * is the time of its first page of 50.
 *
 * HISTORY_BENCH_LIFECYCLES (L, default 20000; 2000 with BENCH_QUICK=1) and HISTORY_BENCH_LIVE
 * (comma-separated live-set sizes, default "0,2000") size the run: 20,000 lifecycles take hours
 * on a loaded 2-core machine.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { percentile, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { rootfsList, subidList, volList } from '@sysbox-mgr-ts/contracts';
import { startSystem, type AppName, type System } from './harness.js';
import { HISTORY_GATEWAY_ARGS, historyRig, type HistoryRig } from './history.js';

const quick = process.env.BENCH_QUICK === '1';
const L = Number(process.env.HISTORY_BENCH_LIFECYCLES ?? (quick ? 2000 : 20_000));
const LIVE = (process.env.HISTORY_BENCH_LIVE ?? '0,2000').split(',').map(Number);
const CONCURRENCY = 8;
const LIST_RUNS = 21;
const LIST_PAGE = 50;
const DAEMONS: AppName[] = ['subid-allocator', 'vol-mgr', 'shiftfs-mgr', 'rootfs-cloner', 'gateway'];
const out = (l: string) => void process.stdout.write(`${l}\n`);

interface Snapshot {
  bucketBytes: number;
  bucketMessages: number;
  listMs: Record<string, number>;
  startMs: Record<string, number>;
  rssMb: Record<string, number>;
  fds: Record<string, number>;
}

function procStatus(pid: number): { rssMb: number; fds: number } {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { rssMb: m ? Number(m[1]) / 1024 : NaN, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/**
 * One page of `LIST_PAGE` entries: the service reads its whole store (what history could slow
 * down) and answers a page. vol.list sizes each volume of its page with `du`, so a whole list of
 * 2,000 volumes takes tens of seconds whatever the history.
 */
async function listP50(sys: System, subject: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < LIST_RUNS; i++) {
    const t0 = performance.now();
    await sys.nc.request(subject, JSON.stringify({ limit: LIST_PAGE }), { timeout: 60_000 });
    times.push(performance.now() - t0);
  }
  return percentile(times, 50);
}

async function snapshot(sys: System, rig: HistoryRig): Promise<Snapshot> {
  const counts = await rig.counts();
  const s: Snapshot = {
    bucketBytes: counts.reduce((n, c) => n + c.bytes, 0),
    bucketMessages: counts.reduce((n, c) => n + c.messages, 0),
    listMs: {},
    startMs: {},
    rssMb: {},
    fds: {},
  };
  out(`  buckets: ${s.bucketMessages} messages, ${s.bucketBytes} bytes`);
  for (const [name, subject] of [
    ['vol.list', volList.subject(sys.node)],
    ['subid.list', subidList.subject(sys.node)],
    ['rootfs.list', rootfsList.subject(sys.node)],
  ] as const)
    s.listMs[name] = await listP50(sys, subject);
  out(`  list p50: ${JSON.stringify(s.listMs)}`);
  for (const app of DAEMONS) {
    const p = sys.procs.find((x) => x.app === app && x.proc.exitCode === null)!;
    const st = procStatus(p.proc.pid!);
    s.rssMb[app] = st.rssMb;
    s.fds[app] = st.fds;
  }
  for (const app of DAEMONS) {
    await sys.kill(app, 'SIGTERM');
    const t0 = performance.now();
    await sys.start(app, app === 'gateway' ? HISTORY_GATEWAY_ARGS : []);
    s.startMs[app] = performance.now() - t0;
  }
  return s;
}

const figures: Figure[] = [];
const ratio = (name: string, unit: string, x10: number, x1: number, goal: string, runs?: number): void => {
  figures.push({
    name,
    value: x10,
    unit,
    baseline: { name: 'history x1', value: x1 },
    ratio: x1 === 0 ? undefined : x10 / x1,
    better: 'lower',
    runs,
    goal,
  });
};

for (const live of LIVE) {
  // A range for every live container and every lifecycle in flight (the harness's pool is 64).
  const pool = ['--pool-size', String((live + 4 * CONCURRENCY + 64) * 65536)];
  const sys = await startSystem({
    logLevel: 'info',
    args: { gateway: HISTORY_GATEWAY_ARGS, 'subid-allocator': pool },
  });
  const rig = historyRig(sys);
  try {
    const t0 = Date.now();
    for (let i = 0; i < live; i += CONCURRENCY)
      await Promise.all(
        Array.from({ length: Math.min(CONCURRENCY, live - i) }, (_, j) => rig.startLive(`live-${i + j}`)),
      );
    out(`${live} live containers started in ${Date.now() - t0} ms`);
    const t1 = Date.now();
    await rig.lifecycles('x1', L / 10, CONCURRENCY);
    out(`${L / 10} lifecycles in ${Date.now() - t1} ms`);
    // The restarts connect the rig's gRPC client anew: reconnects are the client's own.
    const x1 = await snapshot(sys, rig);
    const t2 = Date.now();
    await rig.lifecycles('x10', L - L / 10, CONCURRENCY);
    out(`${L - L / 10} more lifecycles in ${Date.now() - t2} ms`);
    const x10 = await snapshot(sys, rig);
    out(JSON.stringify({ live, x1, x10 }));
    const at = `${live} live, ${L} vs ${L / 10} lifecycles`;
    ratio(`bucket bytes (${at})`, 'bytes', x10.bucketBytes, x1.bucketBytes, '<= 2x');
    ratio(`bucket messages (${at})`, 'msgs', x10.bucketMessages, x1.bucketMessages, '');
    for (const name of Object.keys(x1.listMs))
      ratio(`${name} p50 (${at})`, 'ms', x10.listMs[name]!, x1.listMs[name]!, '<= 1.5x', LIST_RUNS);
    for (const app of DAEMONS) {
      ratio(`${app} start time (${at})`, 'ms', x10.startMs[app]!, x1.startMs[app]!, '<= 1.5x');
      ratio(`${app} RSS (${at})`, 'MB', x10.rssMb[app]!, x1.rssMb[app]!, '<= 1.3x');
      figures.push({
        name: `${app} open fds (${at})`,
        value: x10.fds[app]!,
        unit: 'fds',
        baseline: { name: 'history x1', value: x1.fds[app]! },
        better: 'lower',
        goal: '+5 at most',
      });
    }
  } finally {
    rig.close();
    await sys.stop();
  }
}
await writeFigures('e2e-history', figures, out);
