/**
 * Bench: sync-in of a /var/lib/docker tree of 100,000 entries through the running service (a
 * create request over NATS, chownOnSync on: id scan, rsync with --usermap/--groupmap, KV writes)
 * against raw rsync of the same tree with the same maps, alternated in one run.
 * BENCH_QUICK=1 shrinks the tree for a smoke run.
 */
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { volByKind } from '@sysbox-mgr-ts/contracts';
import { compareRuns, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec';
import { needsShift, scanIds, shift } from '@sysbox-mgr-ts/id-shift';
import { silentLogger, createServiceClient } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';
import { startVolApp } from '../src/app.js';
import { idMapOption } from '../src/rsync.js';

const quick = process.env.BENCH_QUICK === '1';
const ENTRIES = quick ? 10_000 : 100_000;
const RUNS = quick ? 1 : 3;
const OFFSET = 165536;
const TIMEOUT = 300_000;

const base = await mkdtemp(join(tmpdir(), 'volmgr-bench-'));
const ns = await startNatsServer({ jetstream: true });
const nc = await ns.connect();
const log = silentLogger();

/** ENTRIES entries under rootfs/var/lib/docker: dirs of 100 files, every tenth dir owned by 1000:1000. */
async function buildTree(rootfs: string): Promise<number> {
  const store = join(rootfs, 'var/lib/docker');
  let entries = 0;
  const writes: Promise<void>[] = [];
  for (let d = 0; entries < ENTRIES; d++) {
    const dir = join(store, `d${d}`);
    await mkdir(dir, { recursive: true });
    entries++;
    if (d % 10 === 0) await chown(dir, 1000, 1000);
    for (let f = 0; f < 100 && entries < ENTRIES; f++, entries++)
      writes.push(writeFile(join(dir, `f${f}`), 'layer data'));
    if (writes.length > 2000) await Promise.all(writes.splice(0));
  }
  await Promise.all(writes);
  return entries;
}

try {
  const rootfs = join(base, 'rootfs');
  const entries = await buildTree(rootfs);
  const dataRoot = join(base, 'data');
  // The bench's own delegation, so it runs on hosts whose /etc/subuid does not hold OFFSET.
  await writeFile(join(base, 'subid'), `bench:${OFFSET}:65536\n`);
  const delegation = {
    allowedRootfsRoots: [base],
    subuidFile: join(base, 'subid'),
    subgidFile: join(base, 'subid'),
  };
  const app = await startVolApp(
    {
      node: 'bench',
      dataRoot,
      kvReplicas: 1,
      sync: true,
      syncTimeoutMs: TIMEOUT,
      removeOrphans: false,
      cleanupOnStop: false,
      stopGraceMs: 0,
      ...delegation,
    },
    { nc, log, version: '0', idShift: { shift, scanIds, needsShift } },
  );
  const client = createServiceClient(nc, { node: 'bench', timeoutMs: TIMEOUT });
  const docker = volByKind.docker;
  const src = join(rootfs, 'var/lib/docker');
  const ids = await scanIds(src);
  const rawDest = join(base, 'raw');
  const rawArgs = [
    '-rauqlH',
    '--no-devices',
    '--delete',
    `--usermap=${idMapOption(ids.uids, OFFSET, 'up')}`,
    `--groupmap=${idMapOption(ids.gids, OFFSET, 'up')}`,
    `${src}/`,
    rawDest,
  ];

  const r = await compareRuns({
    runs: RUNS,
    setup: async () => {
      await client.call(docker.destroy, { id: 'bench' }).catch(() => undefined);
      await rm(rawDest, { recursive: true, force: true });
      await mkdir(rawDest);
    },
    candidate: () =>
      client.call(docker.create, {
        id: 'bench',
        rootfs,
        mountpoint: '/var/lib/docker',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: true,
      }),
    baseline: () => run('rsync', rawArgs, { timeout: TIMEOUT }),
  });
  await app.stop();

  const figures: Figure[] = [
    {
      name: `sync-in ${entries} entries via NATS create (chownOnSync)`,
      value: Math.round(r.candidate.median),
      unit: 'ms',
      baseline: { name: 'raw rsync, same maps', value: Math.round(r.baseline.median) },
      ratio: Math.round(r.ratio * 1000) / 1000,
      better: 'lower',
      spread: r.candidate.spread,
      runs: r.candidate.runs,
      goal: 'overhead ratio under 1.3 (the id scan is the only extra pass over the tree)',
    },
  ];
  await writeFigures('vol-mgr', figures, (l) => process.stdout.write(`${l}\n`));
} finally {
  await nc.close();
  await ns.stop();
  await rm(base, { recursive: true, force: true });
}
