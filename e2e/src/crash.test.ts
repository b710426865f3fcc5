/**
 * Scenario 4: crash safety. For each service and for the gateway, the chown-mode lifecycle runs
 * with that daemon killed with SIGKILL between two steps and started again; the outcome (what
 * the runtime got back, what landed in the rootfs, what is left on the host) must equal a run
 * without a crash, and nothing may leak (the harness's stop() fails on a leftover mount or process).
 */
import { existsSync } from 'node:fs';
import { chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { startSystem, type AppName, type System } from './harness.js';
import {
  dockerVolume,
  newChownContainer,
  runStep,
  STEPS,
  type LifecycleOptions,
  type StepName,
} from './lifecycle.js';
import { buildImage, entries, mountsBelow, servicesState, tree } from './runtime.js';

interface Outcome {
  mounts: unknown;
  /** The docker volume's content as synced out into the rootfs upper dir at the last stop. */
  syncedOut: string[];
  leftovers: unknown;
}

describe('kill -9 of one daemon in the middle of a lifecycle', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let o: LifecycleOptions;
  let baseline: Outcome;

  beforeAll(async () => {
    sys = await startSystem({ args: { gateway: ['--disable-ovfs-on-idmapped-mount'] } });
    client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    o = { client: () => client, overlay2, image: await buildImage(overlay2, 'img'), workload: true };
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  async function lifecycle(id: string, crash?: { app: AppName; after: StepName }): Promise<Outcome> {
    const c = await newChownContainer(o, id);
    let syncedOut: string[] = [];
    for (const step of STEPS) {
      if (step === 'remove') syncedOut = await tree(join(c.rootfs.upper, 'var', 'lib', 'docker'));
      await runStep(o, c, step);
      if (step === 'create') {
        // Written after create's workload: must survive whatever crash comes, and be synced out.
        const f = join(dockerVolume(c), 'after-create');
        await writeFile(f, 'x');
        await chown(f, c.ids!.uid, c.ids!.gid);
      }
      if (crash?.after === step) {
        await sys.kill(crash.app, 'SIGKILL');
        await sys.start(crash.app);
        if (crash.app === 'gateway') {
          client.close();
          client = connectGateway(sys.socket);
        }
      }
    }
    const state = await servicesState(sys);
    return {
      mounts: JSON.parse(JSON.stringify(c.mounts).replaceAll(id, '<id>')),
      syncedOut,
      leftovers: {
        mounts: await mountsBelow(sys.dir),
        dockerDirs: entries(join(sys.dataRoot, 'docker')),
        kubeletDirs: entries(join(sys.dataRoot, 'kubelet')),
        clone: existsSync(join(sys.dataRoot, 'rootfs', id)),
        containerDir: existsSync(c.rootfs.dir),
        subids: state.subid.allocations,
        volumes: state.vol.volumes,
        clones: state.rootfs.clones,
        uppers: state.rootfs.uppers,
      },
    };
  }

  it('without a crash: the reference outcome', async () => {
    showLogs();
    baseline = await lifecycle('nocrash');
    expect(baseline.syncedOut.some((l) => l.startsWith('after-create 0:0'))).toBe(true);
    expect(baseline.leftovers).toMatchObject({ mounts: [], dockerDirs: [], subids: [], clones: [] });
  });

  const crashes: { app: AppName; after: StepName }[] = [
    { app: 'vol-mgr', after: 'create' }, // the next pause syncs out through the restarted daemon
    { app: 'rootfs-cloner', after: 'resume' }, // stop reverts a chown made before the crash
    { app: 'shiftfs-mgr', after: 'pause' },
    { app: 'subid-allocator', after: 'stop-again' }, // removal frees ids through the restarted daemon
    { app: 'gateway', after: 'stop' }, // restart and the removal watch resume from KV
  ];
  for (const crash of crashes) {
    it(`${crash.app} killed after ${crash.after}: same outcome, nothing leaked`, async () => {
      showLogs();
      const outcome = await lifecycle(`crash-${crash.app}`, crash);
      expect(outcome).toEqual(baseline);
    });
  }
});
