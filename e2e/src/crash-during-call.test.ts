/**
 * Scenario 5: crash safety inside a call. crash.test.ts kills a daemon between two lifecycle
 * steps; here the kill lands while the daemon is serving a call, in the windows where it hurts
 * most, found by watching /proc rather than by sleeping: the moment vol-mgr's rsync child shows
 * up. The daemon is restarted, the caller retries as sysbox-runc would, the lifecycle finishes,
 * and the outcome must equal a run without a crash with nothing leaked.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { startSystem, type AppName, type System } from './harness.js';
import {
  dockerVolume,
  newChownContainer,
  runStep,
  SHIFT,
  VOLUME_REQUESTS,
  type ChownContainer,
  type LifecycleOptions,
} from './lifecycle.js';
import { run } from '@sysbox-mgr-ts/exec';
import { buildImage, entries, mountsBelow, servicesState, tree, until } from './runtime.js';

/** Files in the image's inner Docker store: enough that each rsync of it takes a while. */
const INNER_DOCKER_FILES = 12_000;

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
}

function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      // comm sits in parentheses and may hold spaces; ppid is the second field after it.
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      out.push({ pid: Number(d), ppid, comm });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Every rsync under `root` (its child and the receiver/generator that child forks). */
function rsyncsUnder(root: number): number[] {
  const all = processes();
  const found: number[] = [];
  let frontier = [root];
  while (frontier.length > 0) {
    const kids = all.filter((p) => frontier.includes(p.ppid));
    found.push(...kids.filter((p) => p.comm === 'rsync').map((p) => p.pid));
    frontier = kids.map((p) => p.pid);
  }
  return found;
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Running or stopped; a zombie (dead, not yet reaped) counts as gone. */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

describe('kill -9 of a daemon while it serves a call', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let o: LifecycleOptions;

  beforeAll(async () => {
    // A short long-op bound: a call whose daemon died answers within it instead of 9 minutes.
    sys = await startSystem({
      args: { gateway: ['--disable-ovfs-on-idmapped-mount', '--long-op-timeout-ms', '6000'] },
    });
    client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    const image = await buildImage(overlay2, 'img');
    const store = join(image.lowers[1]!, 'var', 'lib', 'docker', 'overlay2', 'layers');
    for (let d = 0; d < INNER_DOCKER_FILES / 500; d++) {
      const dir = join(store, `l${d}`);
      await mkdir(dir, { recursive: true });
      await Promise.all(Array.from({ length: 500 }, (_, i) => writeFile(join(dir, `f${i}`), `${d}/${i}\n`)));
    }
    o = { client: () => client, overlay2, image, workload: true };
  }, 60_000);
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  const pidOf = (app: AppName): number => {
    // A daemon killed by a signal keeps exitCode null: the newest one of the app is the live one.
    const p = sys.procs.filter((x) => x.app === app).at(-1);
    if (!p?.proc.pid || p.proc.signalCode !== null || p.proc.exitCode !== null)
      throw new Error(`${app} is not running`);
    return p.proc.pid;
  };

  /** Waits (polling /proc, no guessed sleep) until vol-mgr runs an rsync; returns its pids. */
  const rsyncStarted = (volMgr: number) =>
    until(
      'an rsync under vol-mgr',
      async () => {
        const pids = rsyncsUnder(volMgr);
        return pids.length > 0 ? pids : undefined;
      },
      20_000,
    );

  const restart = async (app: AppName): Promise<void> => {
    await sys.kill(app, 'SIGKILL');
    await sys.start(app);
    if (app === 'gateway') {
      client.close();
      client = connectGateway(sys.socket);
    }
  };

  /** Every trace of a container left on the host and in the services, for a no-leak check. */
  const leftovers = async (c: ChownContainer) => {
    const state = await servicesState(sys);
    return {
      mounts: await mountsBelow(sys.dir),
      dockerDirs: entries(join(sys.dataRoot, 'docker')),
      kubeletDirs: entries(join(sys.dataRoot, 'kubelet')),
      rootfsDirs: entries(join(sys.dataRoot, 'rootfs')),
      containerDir: entries(sys.dir + '/docker/overlay2').includes(c.id),
      subids: state.subid.allocations,
      volumes: state.vol.volumes,
      clones: state.rootfs.clones,
    };
  };
  const clean = {
    mounts: [],
    dockerDirs: [],
    kubeletDirs: [],
    rootfsDirs: [],
    containerDir: false,
    subids: [],
    volumes: [],
    clones: [],
  };

  /** Docker's unmount of the rootfs on stop (the top of the stack: the clone's bind-to-self). */
  const unmountRootfs = (c: ChownContainer) => run('umount', [c.rootfs.merged], { timeout: 10_000 });

  const syncedOut = (c: ChownContainer) => tree(join(c.rootfs.upper, 'var', 'lib', 'docker'));
  let reference: string[];

  it('without a crash: the reference sync-out', async () => {
    showLogs();
    const c = await newChownContainer(o, 'ref');
    await runStep(o, c, 'create');
    await runStep(o, c, 'stop');
    reference = await syncedOut(c);
    await runStep(o, c, 'remove');
    expect(reference.length).toBeGreaterThan(INNER_DOCKER_FILES);
    expect(reference).toContain('image/pulled/layer.tar 0:0 644');
    expect(await leftovers(c)).toEqual(clean);
  });

  // Regression (found by this test): a kill -9 of vol-mgr left its rsync running unsupervised,
  // and the gateway logged the sync-out's time-out and moved on, so files only the volume held
  // never reached the rootfs (the orphan rsync, finishing by itself, hid that). Now rsync dies
  // with vol-mgr (parent-death signal) and the gateway tries the sync-out once more, which
  // reaches the restarted vol-mgr.
  it('vol-mgr killed during the sync-out of Unregister: its rsync dies with it, the retry completes the sync-out', async () => {
    const c = await newChownContainer(o, 'syncout');
    await runStep(o, c, 'create');
    const volMgr = pidOf('vol-mgr');
    await rpc(client, 'RevertClonedRootfsChown', { id: c.id });
    const unregister = statusOf(rpc(client, 'Unregister', { id: c.id }));
    const rsyncs = await rsyncStarted(volMgr);
    // Frozen, so that an orphan cannot finish the copy before it is looked for, however fast
    // the disk: a fix (a parent-death signal, or the restarted daemon killing its predecessor's
    // children) kills a stopped process all the same.
    signalAll(rsyncs, 'SIGSTOP');
    await restart('vol-mgr');
    // Let them run again: the main rsync got its parent-death SIGKILL even while stopped; its
    // forked helper has no such signal and leaves once its pipe to the dead main rsync closes.
    signalAll(rsyncs, 'SIGCONT');
    await until('rsync gone', async () => rsyncs.every((p) => !alive(p)) || undefined, 3000).catch(
      () => undefined,
    );
    const survivors = rsyncs.filter(alive);
    // Go on as if they had died with vol-mgr, so what follows does not depend on the orphans.
    signalAll(survivors, 'SIGKILL');
    await until('orphans reaped', async () => survivors.every((p) => !alive(p)) || undefined);

    // sysbox-runc retries a failed Unregister; a retry after a success is refused as redundant.
    let failure = await unregister;
    for (let attempt = 0; failure && attempt < 3; attempt++)
      failure = await statusOf(rpc(client, 'Unregister', { id: c.id }));
    const afterStop = await syncedOut(c);
    await unmountRootfs(c);
    await runStep(o, c, 'remove');

    expect.soft(survivors, 'rsync processes left running after vol-mgr was killed').toEqual([]);
    expect.soft(failure, 'Unregister (with retries) failed').toBeUndefined();
    expect.soft(afterStop, 'the synced-out tree after the stop').toEqual(reference);
    expect(await leftovers(c)).toEqual(clean);
  });

  // Regression (found by this test): vol-mgr finished a create whose caller (the gateway) had died;
  // the gateway's record never learnt of that volume, the retried create was refused with
  // already-exists, and the volume leaked. The gateway now records the kinds before creating and
  // adopts a volume an unanswered ReqMounts made.
  it('gateway killed while a ReqMounts sync-in is in flight: the retry gives the same mounts, removal releases all', async () => {
    const c = await newChownContainer(o, 'reqmounts');
    const first = client;
    await rpc(first, 'Register', {
      id: c.id,
      rootfs: c.rootfs.merged,
      userns: '',
      netns: '',
      uidMappings: [],
      gidMappings: [],
    });
    const ids = await rpc<{ uid: number; gid: number }>(first, 'SubidAlloc', { id: c.id, size: 65536 });
    const clone = (await rpc(first, 'ReqCloneRootfs', { id: c.id })).rootfs as string;
    const map = (hostID: number) => [{ containerID: 0, hostID, size: 65536 }];
    await rpc(first, 'Update', {
      id: c.id,
      userns: '',
      netns: '',
      uidMappings: map(ids.uid),
      gidMappings: map(ids.gid),
      rootfsUidShiftType: SHIFT.chown,
    });
    const volMgr = pidOf('vol-mgr');
    const req = { id: c.id, rootfsUidShiftType: SHIFT.chown, reqList: VOLUME_REQUESTS };
    const inFlight = statusOf(rpc(first, 'ReqMounts', req));
    // Frozen while the gateway dies, so the create surely spans the kill; then let it finish.
    const rsyncs = await rsyncStarted(volMgr);
    signalAll(rsyncs, 'SIGSTOP');
    await sys.kill('gateway', 'SIGKILL');
    signalAll(rsyncs, 'SIGCONT');
    await restart('gateway');
    expect((await inFlight)?.code, 'the call in flight when the gateway died').toBe(status.UNAVAILABLE);

    // The runtime retries once the gateway answers again.
    let mounts: ChownContainer['mounts'];
    let retryFailure: Awaited<ReturnType<typeof statusOf>>;
    try {
      mounts = (await rpc(client, 'ReqMounts', req)).mounts;
    } catch (err) {
      retryFailure = await statusOf(Promise.reject(err));
    }
    if (mounts) {
      c.ids = ids;
      c.cloneRootfs = clone;
      c.mounts = mounts;
      await rpc(client, 'ReqFsState', { id: c.id, rootfs: clone });
      await rpc(client, 'ChownClonedRootfs', { id: c.id, uidOffset: ids.uid, gidOffset: ids.gid });
      await runStep(o, c, 'stop');
    } else {
      // A failed create: sysbox-runc unregisters, Docker unmounts and removes the container.
      await rpc(client, 'Unregister', { id: c.id });
      await unmountRootfs(c);
    }
    await runStep(o, c, 'remove');

    expect.soft(retryFailure, 'the retried ReqMounts').toBeUndefined();
    if (mounts) {
      expect.soft(dockerVolume(c)).toBe(join(sys.dataRoot, 'docker', c.id));
      expect
        .soft(mounts.map((m) => m.dest))
        .toEqual(expect.arrayContaining(VOLUME_REQUESTS.map((r) => r.dest)));
    }
    expect(await leftovers(c)).toEqual(clean);
  });
});
