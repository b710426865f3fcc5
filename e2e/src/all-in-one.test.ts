/**
 * The one-process shape: all five apps in one Node process (apps/all-in-one), each on its own
 * NATS identity, run the same chown-mode lifecycle the split daemons run, and leave nothing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { newChownContainer, runStep, type LifecycleOptions } from './lifecycle.js';
import { buildImage, mountsBelow, servicesState } from './runtime.js';

const rssMb = (pid: number): number =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

describe('all five apps in one process', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let o: LifecycleOptions;
  beforeAll(async () => {
    sys = await startSystem({
      apps: ['all-in-one'],
      args: { gateway: ['--disable-ovfs-on-idmapped-mount'] },
    });
    client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    o = { client: () => client, overlay2, image: await buildImage(overlay2, 'img'), workload: true };
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });

  it('serves every service under its own identity and runs a lifecycle to the end', async () => {
    onTestFailed(() => void process.stderr.write(sys.logs()));
    const pid = sys.procs[0]!.proc.pid!;
    const idleMb = rssMb(pid);
    process.stdout.write(`all-in-one RSS idle: ${idleMb.toFixed(1)} MB\n`);
    const pings = await sys.nc.requestMany('$SRV.PING', '', { maxWait: 1000 });
    const names: string[] = [];
    for await (const m of pings) names.push(m.json<{ name: string }>().name);
    expect(names.sort()).toEqual(['sysbox-rootfs', 'sysbox-shiftfs', 'sysbox-subid', 'sysbox-vol']);

    const c = await newChownContainer(o, 'one1');
    for (const step of ['create', 'stop', 'remove'] as const) await runStep(o, c, step);
    const state = await servicesState(sys);
    expect(state.subid.allocations).toEqual([]);
    expect(state.vol.volumes).toEqual([]);
    expect(state.rootfs.clones).toEqual([]);
    expect(await mountsBelow(join(sys.dir, 'data'))).toEqual([]);
    expect(idleMb).toBeLessThan(100);
  });
});
