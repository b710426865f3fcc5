/**
 * Whole-system bench of the ID-mapped path (kernel >= 5.19, overlayfs on ID-mapped mounts: what
 * sysbox uses on current kernels; no clone, no chown of the rootfs): Register, SubidAlloc, the
 * runtime's chown of the upper dir, Update, ReqMounts (docker and kubelet volumes, synced in
 * without a uid shift), ReqFsState, Unregister (upper dir reverted, volumes synced out), removal.
 * The image preloads an inner Docker store of ENTRIES files, so the sync-in and sync-out move a
 * real tree. The same-run baseline is the same filesystem work done directly: the runtime's
 * chown, rsync in, the revert walk, rsync out, unmount and delete.
 *
 * Figures: sequential and 8 at a time (pairs of system/direct runs alternated; median of the
 * per-pair ratios and their interquartile spread), the CPU time of every process involved per
 * lifecycle (the daemons, nats-server and this process with its children) against the direct
 * work's, and 32 lifecycles at once through the one gateway with the longest call against
 * sysbox-ipc's 10-minute deadline. Runs on a RAM-backed ext4 (bench-support.ts).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { compareRuns, writeFigures, type Figure, type Sample } from '@sysbox-mgr-ts/bench-kit';
import { run } from '@sysbox-mgr-ts/exec';
import { timedClient, type Span } from './breakdown.js';
import {
  benchScratch,
  cpuMeter,
  cpuSamples,
  lifecycleFigures,
  measuredWindow,
  type LifecycleComparison,
} from './bench-support.js';
import { connectGateway, rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { SHIFT, VOLUME_REQUESTS } from './lifecycle.js';
import {
  buildImage,
  mountContainerRootfs,
  shiftTree,
  unmountAll,
  until,
  type ContainerRootfs,
  type ImageLayers,
} from './runtime.js';

const quick = process.env.BENCH_QUICK === '1';
const ENTRIES = Number(process.env.BENCH_IDMAPPED_ENTRIES ?? (quick ? 1000 : 10_000));
const SEQ_RUNS = Number(process.env.BENCH_SEQ_RUNS ?? (quick ? 3 : 9));
const CONC_RUNS = Number(process.env.BENCH_CONC_RUNS ?? (quick ? 1 : 3));
const CONCURRENCY = 8;
const WIDE = Number(process.env.BENCH_WIDE ?? 32);
/** sysbox-ipc's grpcTimeout: every call but ReqMounts has 10 minutes. */
const IPC_DEADLINE_MS = 10 * 60_000;
const out = (l: string) => void process.stdout.write(`${l}\n`);

interface Ctr {
  id: string;
  rootfs: ContainerRootfs;
  uid?: number;
  dockerVolume?: string;
}

/** The ID-mapped lifecycle as sysbox-runc drives it, each call with sysbox-ipc's deadline. */
async function systemLifecycle(client: SysboxMgrClient, c: Ctr, record: (s: Span) => void): Promise<void> {
  const call = <T = any>(method: string, req: object) => rpc<T>(client, method, req, IPC_DEADLINE_MS);
  const step = async (name: string, fn: () => Promise<void>) => {
    const start = Date.now();
    await fn();
    record({ step: `lifecycle ${name}`, start, end: Date.now() });
  };
  await step('create', async () => {
    const reg = await call('Register', {
      id: c.id,
      rootfs: c.rootfs.merged,
      userns: '',
      netns: '',
      uidMappings: [],
      gidMappings: [],
    });
    if (!reg.containerConfig.OverlayfsOnIDMapMountOk)
      throw new Error('the gateway found no overlayfs on ID-mapped mounts on this kernel');
    const { uid, gid } = await call<{ uid: number; gid: number }>('SubidAlloc', { id: c.id, size: 65536 });
    c.uid = uid;
    // runc chowns the upper dir itself (overlayfs cannot ID-map it); Update records that.
    await shiftTree(c.rootfs.upper, uid);
    await call('Update', {
      id: c.id,
      userns: '',
      netns: '',
      uidMappings: [{ containerID: 0, hostID: uid, size: 65536 }],
      gidMappings: [{ containerID: 0, hostID: gid, size: 65536 }],
      rootfsUidShiftType: SHIFT.idMapped,
    });
    const { mounts } = await call<{ mounts: { source: string; dest: string }[] }>('ReqMounts', {
      id: c.id,
      rootfsUidShiftType: SHIFT.idMapped,
      reqList: VOLUME_REQUESTS,
    });
    c.dockerVolume = mounts.find((m) => m.dest === '/var/lib/docker')!.source;
    await call('ReqFsState', { id: c.id, rootfs: c.rootfs.merged });
    await innerDockerPulls(c.dockerVolume, c.id);
  });
  await step('stop', async () => {
    await call('Unregister', { id: c.id });
    await run('umount', [c.rootfs.merged], { timeout: 30_000 });
  });
  await step('remove', async () => {
    // Docker's rm (removeLikeDocker), timed in parts.
    let t = Date.now();
    const part = (name: string) => {
      record({ step: `remove: ${name}`, start: t, end: Date.now() });
      t = Date.now();
    };
    await unmountAll(c.rootfs.merged);
    part('runtime unmount');
    await run('rm', ['-rf', c.rootfs.dir], { timeout: 30_000, okExitCodes: [1] });
    part('runtime rm -rf');
    await until(
      `release of ${c.id}`,
      async () =>
        (await statusOf(call('ReqFsState', { id: c.id, rootfs: c.rootfs.merged })))?.code ===
        status.NOT_FOUND,
      IPC_DEADLINE_MS,
    );
    part('wait for the release');
    await rm(c.rootfs.dir, { recursive: true, force: true });
  });
}

/** The container's inner Docker writes a file into its store (through the ID-mapped mount: root's). */
async function innerDockerPulls(volume: string, id: string): Promise<void> {
  await mkdir(join(volume, 'image', 'pulled'), { recursive: true });
  await writeFile(join(volume, 'image', 'pulled', 'layer.tar'), `pulled by ${id}\n`);
}

/**
 * The same host work done directly: the runtime's chown of the upper dir, both volumes synced in
 * (no uid shift: the ID-mapped mount shifts), the revert of the upper dir, the volumes synced out
 * into it, unmount and delete.
 */
async function directLifecycle(
  volumesDir: string,
  c: Ctr,
  uid: number,
  record: (s: Span) => void,
): Promise<void> {
  const timed = async (step: string, fn: () => Promise<unknown>): Promise<void> => {
    const start = Date.now();
    await fn();
    record({ step: `direct ${step}`, start, end: Date.now() });
  };
  const rsync = (from: string, to: string) =>
    run('rsync', ['-rauqlH', '--no-devices', '--delete', `${from}/`, `${to}/`], { timeout: 600_000 });
  const volumes = VOLUME_REQUESTS.map((v) => ({ dest: v.dest, host: join(volumesDir, c.id, v.dest) }));
  await timed('chown upper', () => shiftTree(c.rootfs.upper, uid));
  await timed('rsync in', async () => {
    for (const v of volumes) {
      await mkdir(v.host, { recursive: true });
      await rsync(join(c.rootfs.merged, v.dest), v.host);
    }
  });
  await innerDockerPulls(volumes[0]!.host, c.id);
  await timed('revert upper', () => shiftTree(c.rootfs.upper, -uid));
  await timed('rsync out', async () => {
    for (const v of volumes) {
      const target = join(c.rootfs.upper, v.dest);
      await mkdir(target, { recursive: true });
      await rsync(v.host, target);
    }
  });
  // The runtime's part as the system run does it (rm -rf), the volumes' as vol-mgr does it.
  await timed('unmount and delete', async () => {
    await unmountAll(c.rootfs.merged);
    await run('rm', ['-rf', c.rootfs.dir], { timeout: 30_000 });
    await rm(join(volumesDir, c.id), { recursive: true, force: true });
  });
}

async function main(): Promise<void> {
  const scratch = await benchScratch();
  const sys: System = await startSystem({
    logLevel: process.env.BENCH_LOG_LEVEL ?? 'info',
    under: scratch.dir,
  }).catch(async (err: unknown) => {
    await scratch.close();
    throw err;
  });
  const figures: Figure[] = [];
  const client = connectGateway(sys.socket);
  try {
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    const volumesDir = join(sys.dir, 'direct-volumes');
    const image = await buildImage(overlay2, 'img', ENTRIES, 'inner-docker');
    const small = await buildImage(overlay2, 'small', Math.min(ENTRIES, 1000), 'inner-docker');
    const spans: Span[] = [];
    const timed = timedClient(client, (s) => spans.push(s));
    const meter = cpuMeter(sys);
    const cpu = { system: [] as number[], direct: [] as number[] };

    let n = 0;
    const lifecycle = async (img: ImageLayers, viaSystem: boolean): Promise<void> => {
      const id = `${viaSystem ? 'ctr' : 'direct'}-${n++}`;
      const c: Ctr = { id, rootfs: await mountContainerRootfs(overlay2, id, img) };
      if (viaSystem) await systemLifecycle(timed, c, (s) => spans.push(s));
      // The direct run shifts by an id range like the ones the allocator hands out.
      else await directLifecycle(volumesDir, c, 165536 + 65536 * (n % 64), (s) => spans.push(s));
    };
    const measured = (k: number, img: ImageLayers, viaSystem: boolean) => async () => {
      const used = meter();
      await Promise.all(Array.from({ length: k }, () => lifecycle(img, viaSystem)));
      (viaSystem ? cpu.system : cpu.direct).push(used() / k);
    };

    const breakdown: string[] = [];
    const compare = async (k: number, runs: number, img: ImageLayers, label: string) => {
      cpu.system = [];
      cpu.direct = [];
      const r = await measuredWindow(
        sys,
        spans,
        breakdown,
        `${label} (${runs} x ${k} lifecycles)`,
        runs * k,
        () =>
          compareRuns({
            runs,
            warmup: 1,
            candidate: measured(k, img, true),
            baseline: measured(k, img, false),
          }),
      );
      const maxCall = Math.max(
        0,
        ...spans.filter((s) => s.step.startsWith('grpc ')).map((s) => s.end - s.start),
      );
      // Warm-up runs are in cpu too: dropped.
      return { ...r, ...cpuSamples(cpu, 1), maxCall };
    };
    const push = (name: string, k: number, r: LifecycleComparison, goal: string) =>
      figures.push(...lifecycleFigures(`ID-mapped lifecycle, ${name}`, r, k, goal));
    const spreadOf = (s: Sample) => `${s.min.toFixed(0)}-${s.max.toFixed(0)} ms`;

    const seq = await compare(1, SEQ_RUNS, image, 'ID-mapped, one lifecycle at a time');
    push(`sequential (${ENTRIES}-entry inner image, ${scratch.label})`, 1, seq, '>= 0.95x');
    if (CONC_RUNS > 0) {
      const conc = await compare(CONCURRENCY, CONC_RUNS, image, `ID-mapped, ${CONCURRENCY} at a time`);
      push(`${CONCURRENCY} at a time`, CONCURRENCY, conc, '>= 0.95x');
    }
    if (WIDE > 0) {
      const wide = await compare(
        WIDE,
        1,
        small,
        `ID-mapped, ${WIDE} at once, ${Math.min(ENTRIES, 1000)}-entry inner image`,
      );
      push(
        `${WIDE} at once through one gateway (${Math.min(ENTRIES, 1000)}-entry inner image)`,
        WIDE,
        wide,
        '',
      );
      figures.push({
        name: `longest gRPC call, ${WIDE} at once`,
        value: wide.maxCall,
        unit: 'ms',
        better: 'lower',
        goal: `< ${IPC_DEADLINE_MS} ms (sysbox-ipc's deadline)`,
      });
    }
    out(`sequential: system ${spreadOf(seq.candidate)}, direct ${spreadOf(seq.baseline)}`);
    out('');
    out('## Where the time goes (ID-mapped)');
    out('');
    for (const l of breakdown) out(l);
  } finally {
    client.close();
    await sys.stop();
    await scratch.close();
  }
  await writeFigures('e2e-idmapped', figures, out);
}

await main();
