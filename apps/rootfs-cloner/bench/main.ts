/**
 * Bench: clone creation time (baseline: the runtime's own overlay mount of the same layers), and
 * chown of a clone (metacopy: metadata-only copy-up) versus the same id-shift over a full copy of
 * the same tree, alternated in one run. BENCH_QUICK=1 shrinks the tree for a smoke run.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { summarize, writeFigures, type Figure } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec';
import { createHostGuard } from '@sysbox-mgr-ts/host-guard';
import { shift } from '@sysbox-mgr-ts/id-shift';
import { rootfsService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';
import { CloneRecord, UpperRecord, createCloner } from '../src/cloner.js';
import { createMounter } from '../src/mounter.js';

const quick = process.env.BENCH_QUICK === '1';
const ENTRIES = quick ? 10_000 : 100_000;
const RUNS = quick ? 1 : 3;
const LAYERS = 4;
const OFFSET = 165536;
const TIMEOUT = 120_000;

const base = await mkdtemp(join(tmpdir(), 'rfc-bench-'));
const ns = await startNatsServer({ jetstream: true });
const nc = await ns.connect();
const log = silentLogger();
const sh = (file: string, args: string[], cwd?: string) => run(file, args, { timeout: TIMEOUT, cwd });

/** ENTRIES files and dirs spread over LAYERS lower layers, 100 files per dir. */
async function buildLayers(): Promise<string[]> {
  const layers: string[] = [];
  const perLayer = Math.ceil(ENTRIES / LAYERS);
  for (let l = 0; l < LAYERS; l++) {
    const dir = join(base, 'snapshots', String(l + 1), 'fs');
    layers.unshift(dir);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < perLayer; i += 101) {
      const sub = join(dir, `l${l}`, `d${i}`);
      await mkdir(sub, { recursive: true });
      for (let f = 0; f < 100 && i + f < perLayer; f++) writes.push(writeFile(join(sub, `f${f}`), 'x'));
      if (writes.length > 2000) await Promise.all(writes.splice(0));
    }
    await Promise.all(writes);
  }
  return layers;
}

async function main(): Promise<void> {
  const lowers = await buildLayers();
  const rootfs = join(base, 'containers', 'c', 'rootfs');
  const upper = join(base, 'snapshots', 'up', 'fs');
  const work = join(base, 'snapshots', 'up', 'work');
  const overlayOpts = `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${work}`;

  // remove-clone clears the original rootfs as upstream does; the next run needs it again.
  const remountRootfs = async () => {
    for (const d of [upper, work]) await rm(d, { recursive: true, force: true });
    for (const d of [rootfs, upper, work]) await mkdir(d, { recursive: true });
    await sh('mount', ['-t', 'overlay', 'overlay', '-o', overlayOpts, rootfs]);
  };
  await remountRootfs();

  const kv = await openBucket(nc, rootfsService.bucket);
  // The bench's own delegation, so it runs on hosts whose /etc/subuid does not hold OFFSET.
  await writeFile(join(base, 'subid'), `bench:${OFFSET}:65536\n`);
  const cloner = createCloner({
    dataRoot: join(base, 'data'),
    clones: createStateStore(kv, { node: 'bench', namespace: 'clone', schema: CloneRecord }),
    uppers: createStateStore(kv, { node: 'bench', namespace: 'upper', schema: UpperRecord }),
    mounter: createMounter({ timeoutMs: TIMEOUT }),
    shiftIds: shift,
    log,
    pageSize: 4096,
    shiftTimeoutMs: TIMEOUT,
    readMounts: () => readMountInfo(),
    guard: createHostGuard({
      dataRoot: join(base, 'data'),
      allowedRootfsRoots: [base],
      subuidFile: join(base, 'subid'),
      subgidFile: join(base, 'subid'),
    }),
  });

  const createMs: number[] = [];
  const plainMountMs: number[] = [];
  const cloneChownMs: number[] = [];
  const copyChownMs: number[] = [];
  const copyMs: number[] = [];
  let entries = 0;
  const copy = join(base, 'copy');
  for (let i = 0; i < RUNS; i++) {
    // Creation: the clone (mkdir, overlay, binds, KV) versus the runtime's plain overlay mount.
    let t0 = performance.now();
    await cloner.createClone('bench', rootfs);
    createMs.push(performance.now() - t0);
    const plain = join(base, 'plain');
    await rm(join(base, 'plain-up'), { recursive: true, force: true });
    for (const d of [plain, join(base, 'plain-up', 'fs'), join(base, 'plain-up', 'work')])
      await mkdir(d, { recursive: true });
    t0 = performance.now();
    await sh('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lowers.join(':')},upperdir=${base}/plain-up/fs,workdir=${base}/plain-up/work`,
      plain,
    ]);
    plainMountMs.push(performance.now() - t0);
    await sh('umount', [plain]);

    // Chown: clone (metadata copy-up) and a full copy of the same tree, order alternating.
    const chownClone = async () => {
      const t = performance.now();
      await cloner.chownClone('bench', OFFSET, OFFSET);
      cloneChownMs.push(performance.now() - t);
      await cloner.removeClone('bench');
      await remountRootfs();
    };
    const chownCopy = async () => {
      await rm(copy, { recursive: true, force: true });
      const tCopy = performance.now();
      await sh('cp', ['-a', `${rootfs}/.`, copy]);
      copyMs.push(performance.now() - tCopy);
      const t = performance.now();
      const r = await shift(copy, OFFSET, OFFSET, {});
      copyChownMs.push(performance.now() - t);
      entries = r.entries;
    };
    if (i % 2 === 0) {
      await chownClone();
      await chownCopy();
    } else {
      await chownCopy();
      await chownClone();
    }
  }

  const create = summarize(createMs);
  const plainMount = summarize(plainMountMs);
  const clone = summarize(cloneChownMs);
  const full = summarize(copyChownMs);
  const figures: Figure[] = [
    {
      name: `create-clone (${LAYERS} layers)`,
      value: create.median,
      unit: 'ms',
      baseline: { name: 'plain overlay mount of the same layers', value: plainMount.median },
      ratio: create.median / plainMount.median,
      spread: create.spread,
      runs: create.runs,
    },
    {
      name: `chown-clone, ${entries} entries`,
      value: clone.median,
      unit: 'ms',
      baseline: { name: 'same id-shift over a full copy', value: full.median },
      ratio: clone.median / full.median,
      spread: clone.spread,
      runs: clone.runs,
    },
    {
      // What it costs to give a container a rootfs its root owns: the point of metacopy.
      name: `create-clone + chown-clone, ${entries} entries`,
      value: create.median + clone.median,
      unit: 'ms',
      baseline: {
        name: 'cp -a of the rootfs + the same id-shift',
        value: summarize(copyMs).median + full.median,
      },
      ratio: (create.median + clone.median) / (summarize(copyMs).median + full.median),
      runs: clone.runs,
      goal: '< 1: cheaper than a full copy',
    },
  ];
  await writeFigures('rootfs-cloner', figures, (l) => process.stdout.write(`${l}\n`));
}

try {
  await main();
} finally {
  for (const m of mountsUnder(await readMountInfo(), base))
    await run('umount', ['-l', m.mountPoint], { timeout: 10_000 }).catch(() => undefined);
  await rm(base, { recursive: true, force: true });
  await nc.close();
  await ns.stop();
}
