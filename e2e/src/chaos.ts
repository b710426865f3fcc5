/**
 * Chaos: concurrent container lifecycles through the gateway while random daemons are SIGKILLed
 * at random instants and started again, then the runtime's clean-up of every failed lifecycle
 * and a settle period; what is left on the host and in every bucket is counted. Seeded: the
 * seed is printed, and the same seed replays the same kill schedule (the instants a kill lands
 * in a call still depend on timing). The suite runs it for about a minute; the bench longer.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { SERVICE_APPS, sleep, type AppName, type System } from './harness.js';
import {
  cleanUpLikeARuntime,
  newChownContainer,
  released,
  runStep,
  type ChownContainer,
  type LifecycleOptions,
  type StepName,
} from './lifecycle.js';
import { buildImage, entries, mountsBelow, servicesState } from './runtime.js';
import { GATEWAY_BUCKET } from '@sysbox-mgr-ts/contracts';
import { seededRandom } from '@sysbox-mgr-ts/bench-kit';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { z } from 'zod';

export interface ChaosOptions {
  seed: number;
  durationMs: number;
  /** Lifecycles running at once. */
  streams: number;
  /** A kill every minKillGapMs..maxKillGapMs. */
  minKillGapMs: number;
  maxKillGapMs: number;
  /** How long a killed daemon stays down (systemd brings one back in about that). */
  downMs: number;
  /** After the run, how long the removal watch and reconciles get to release everything. */
  settleMs: number;
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  kills: Record<AppName, number>;
  lifecycles: number;
  failed: number;
  failures: string[];
  /** What is left after the settle: one line per item. */
  left: string[];
}

export async function runChaos(sys: System, opts: ChaosOptions): Promise<ChaosReport> {
  const random = seededRandom(opts.seed);
  const log = opts.log ?? (() => undefined);
  let client: SysboxMgrClient = connectGateway(sys.socket);
  const overlay2 = join(sys.dir, 'docker', 'overlay2');
  const o: LifecycleOptions = {
    client: () => client,
    overlay2,
    image: await buildImage(overlay2, 'chaos-img'),
  };
  const apps: AppName[] = [...SERVICE_APPS, 'gateway'];
  const kills = Object.fromEntries(apps.map((a) => [a, 0])) as Record<AppName, number>;
  const failures: string[] = [];
  /** Failed containers whose rootfs dir the runtime could not delete yet (not released in time). */
  const undeleted: ChownContainer[] = [];
  let lifecycles = 0;
  let running = true;
  let seq = 0;

  const stream = async (name: string): Promise<void> => {
    while (running) {
      const c = await newChownContainer(o, `${name}-${++seq}`);
      lifecycles++;
      let step: StepName = 'create';
      try {
        for (step of ['create', 'stop', 'remove'] as StepName[]) await runStep(o, c, step);
      } catch (err) {
        failures.push(`${c.id} at ${step}: ${(err as Error).message.split('\n')[0]}`);
        if (!(await cleanUpLikeARuntime(() => client, c))) undeleted.push(c);
      }
    }
  };

  let stopped!: () => void;
  const stopping = new Promise<void>((r) => (stopped = r));
  const killer = async (): Promise<void> => {
    for (;;) {
      // The wait ends early when the run does (a calm run's gap is longer than the run), and its
      // timer goes with it: left pending, it kept the chaos bench's process alive for 100 minutes.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(
          resolve,
          opts.minKillGapMs + random() * (opts.maxKillGapMs - opts.minKillGapMs),
        );
        void stopping.then(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (!running) return;
      const app = apps[Math.floor(random() * apps.length)]!;
      kills[app]++;
      log(`kill -9 ${app}`);
      await sys.kill(app, 'SIGKILL');
      await sleep(opts.downMs);
      await sys.start(app);
      if (app === 'gateway') {
        // A new socket: sysbox-runc dials it again for each call; so does this client.
        client.close();
        client = connectGateway(sys.socket);
      }
    }
  };

  const streams = Array.from({ length: opts.streams }, (_, i) => stream(`s${i}`));
  const killing = killer();
  await sleep(opts.durationMs);
  running = false;
  stopped();
  await Promise.all(streams);
  await killing;

  // Settle: everything the runtime removed must be released by the gateway and the services.
  const deadline = Date.now() + opts.settleMs;
  // A service that answers its list with an error (one still restarting or busy releasing) has
  // not settled yet: asked again, and reported as left if it never answers.
  const look = (): Promise<string[]> =>
    leftovers(sys).catch((err: unknown) => [`no list answer: ${(err as Error).message}`]);
  // The runtime retries deleting the rootfs dirs it could not delete before their release.
  const retryDeletes = async (): Promise<void> => {
    for (const c of [...undeleted]) {
      if (existsSync(c.rootfs.dir) && !(await released(client, c.id).catch(() => false))) continue;
      await rm(c.rootfs.dir, { recursive: true, force: true });
      undeleted.splice(undeleted.indexOf(c), 1);
    }
  };
  await retryDeletes();
  let left = await look();
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(500);
    await retryDeletes();
    left = await look();
  }
  client.close();
  return { seed: opts.seed, kills, lifecycles, failed: failures.length, failures, left };
}

/** What is left of containers: gateway records, every service's records, mounts and dirs. */
export async function leftovers(sys: System): Promise<string[]> {
  const left: string[] = [];
  const state = await servicesState(sys);
  for (const a of state.subid.allocations) left.push(`subid allocation ${a.id}`);
  for (const v of state.vol.volumes) left.push(`vol record ${v.kind}/${v.id}`);
  for (const p of state.vol.preps) left.push(`prep record ${p.source}`);
  for (const c of state.rootfs.clones) left.push(`clone record ${c.id}`);
  for (const u of state.rootfs.uppers) left.push(`upper record ${u.id}`);
  for (const m of state.shiftfs.marks) left.push(`shiftfs mark ${JSON.stringify(m)}`);
  for (const id of await gatewayRecords(sys)) left.push(`gateway record ${id}`);
  for (const m of await mountsBelow(sys.dir)) left.push(`mount ${m}`);
  for (const kind of ['docker', 'kubelet'])
    for (const e of entries(join(sys.dataRoot, kind))) left.push(`volume dir ${kind}/${e}`);
  for (const e of entries(join(sys.dataRoot, 'rootfs'))) left.push(`clone dir ${e}`);
  for (const e of entries(join(sys.dir, 'docker', 'overlay2')).filter((d) => !d.startsWith('chaos-img')))
    left.push(`container dir ${e}`);
  return left;
}

async function gatewayRecords(sys: System): Promise<string[]> {
  const table = createStateStore(await openBucket(sys.nc, GATEWAY_BUCKET), {
    node: sys.node,
    schema: z.object({ id: z.string() }).passthrough(),
  });
  return (await table.list()).map((r) => r.value.id);
}
