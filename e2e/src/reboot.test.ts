/**
 * A host that reboots (issue #25). Two chown-mode containers run (Register, SubidAlloc, a cloned
 * rootfs, ReqMounts with a docker and a kubelet volume, the clone chowned, an image pulled into
 * the inner Docker's volume). Power is lost: every daemon and the nats-server are SIGKILLed (the
 * JetStream store stays), every mount goes. The host boots: the daemons start again in mount
 * namespaces that see a new /proc/sys/kernel/random/boot_id. Then the runtime's calls: Docker
 * restarts one container with the same id and rootfs, which runs its whole lifecycle and is
 * removed; the other is never started again and Docker deletes its rootfs. Once both are gone,
 * nothing of the earlier boot is left: no record in any bucket, no dir, no mount, no subid range.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { run } from '@sysbox-mgr-ts/exec';
import { BOOT_ID_FILE } from '@sysbox-mgr-ts/kv-state';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  GATEWAY_BUCKET,
  rootfsService,
  shiftfsService,
  subidService,
  volService,
} from '@sysbox-mgr-ts/contracts';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import {
  dockerVolume,
  newChownContainer,
  released,
  runStep,
  type ChownContainer,
  type LifecycleOptions,
} from './lifecycle.js';
import {
  buildImage,
  entries,
  mountContainerRootfs,
  mountsBelow,
  removeLikeDocker,
  servicesState,
  text,
  unmountAll,
  until,
} from './runtime.js';

const BUCKETS = [
  GATEWAY_BUCKET,
  subidService.bucket,
  volService.bucket,
  shiftfsService.bucket,
  rootfsService.bucket,
];

describe('a reboot with two containers running (issue #25)', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let o: LifecycleOptions;

  beforeAll(async () => {
    sys = await startSystem({ boots: true, args: { gateway: ['--disable-ovfs-on-idmapped-mount'] } });
    client = connectGateway(sys.socket);
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    o = { client: () => client, overlay2, image: await buildImage(overlay2, 'img'), workload: true };
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  /** Live keys of this node in every bucket (what a delete left is not a record). */
  const liveKeys = async (): Promise<string[]> => {
    const jsm = await jetstreamManager(sys.nc);
    const keys: string[] = [];
    for (const bucket of BUCKETS) {
      const stream = `KV_${bucket}`;
      const info = await jsm.streams.info(stream, { subjects_filter: `$KV.${bucket}.${sys.node}.>` });
      for (const subject of Object.keys(info.state.subjects ?? {})) {
        const m = await jsm.streams.getMessage(stream, { last_by_subj: subject });
        const op = m?.header?.get('KV-Operation');
        if (m && op !== 'DEL' && op !== 'PURGE') keys.push(`${subject}: ${m.string()}`);
      }
    }
    return keys.sort();
  };

  it('the restarted container runs its whole lifecycle with its volume and ids; nothing of the earlier boot is left', async () => {
    showLogs();
    const keep: ChownContainer = await newChownContainer(o, 'keep');
    const gone: ChownContainer = await newChownContainer(o, 'gone');
    await runStep(o, keep, 'create');
    await runStep(o, gone, 'create');
    const pulled = join(dockerVolume(keep), 'image', 'pulled', 'layer.tar');
    expect(await text(pulled)).toBe('pulled by keep\n');
    const bootBefore = sys.bootId();
    const hostBoot = readFileSync(BOOT_ID_FILE, 'utf8');

    // Power lost; the host boots.
    client.close();
    const boot = await sys.reboot();
    client = connectGateway(sys.socket);
    expect(boot).not.toBe(bootBefore);
    // Every daemon sees the new boot; the host's own boot id is untouched.
    const running = sys.procs.filter((p) => p.proc.exitCode === null && p.proc.signalCode === null);
    expect(running.map((p) => p.app).sort()).toEqual([
      'gateway',
      'rootfs-cloner',
      'shiftfs-mgr',
      'subid-allocator',
      'vol-mgr',
    ]);
    for (const p of running) {
      const seen = await run('nsenter', ['-t', String(p.proc.pid), '-m', 'cat', BOOT_ID_FILE], {
        timeout: 5000,
      });
      expect([p.app, seen.stdout.trim()]).toEqual([p.app, boot]);
    }
    expect(readFileSync(BOOT_ID_FILE, 'utf8')).toBe(hostBoot);
    expect(await mountsBelow(join(sys.dir, 'docker'))).toEqual([]);
    expect(await mountsBelow(sys.dataRoot)).toEqual([]);

    // Docker starts `keep` again: its overlay on the same rootfs, then sysbox-runc's calls. The
    // restart step checks the same subid range, the same clone path and the same mounts. Each
    // mount of the overlay deletes and re-creates `work/work` in its work dir, where the clone's
    // watch path was: mounted many times here (a start retried), so that a removal watch still
    // looking there meets that instant and releases the container and its volumes.
    for (let i = 0; i < 60; i++) {
      await unmountAll((await mountContainerRootfs(o.overlay2, 'keep', o.image)).merged);
      await new Promise((r) => setTimeout(r, 5));
    }
    keep.rootfs = await mountContainerRootfs(o.overlay2, 'keep', o.image);
    // Still the stopped container of the earlier boot, with its volume.
    expect(await text(pulled)).toBe('pulled by keep\n');
    await runStep(o, keep, 'restart');
    // The inner Docker's image survived the reboot in the volume the container got back.
    expect(await text(pulled)).toBe('pulled by keep\n');
    await runStep(o, keep, 'pause');
    await runStep(o, keep, 'resume');
    await runStep(o, keep, 'stop');
    await runStep(o, keep, 'remove');

    // `gone` is never started again; Docker deletes it (nothing of it is mounted any more).
    await removeLikeDocker(gone.rootfs, () =>
      until('release of gone', async () => released(client, 'gone'), 30_000).then(() => undefined),
    );

    expect(await liveKeys()).toEqual([]);
    const state = await servicesState(sys);
    expect({
      subids: state.subid.allocations,
      volumes: state.vol.volumes,
      preps: state.vol.preps,
      clones: state.rootfs.clones,
      uppers: state.rootfs.uppers,
      marks: state.shiftfs.marks,
    }).toEqual({ subids: [], volumes: [], preps: [], clones: [], uppers: [], marks: [] });
    expect({
      docker: entries(join(sys.dataRoot, 'docker')),
      kubelet: entries(join(sys.dataRoot, 'kubelet')),
      rootfs: entries(join(sys.dataRoot, 'rootfs')),
      containers: entries(o.overlay2).filter((d) => !d.startsWith('img-')),
      mounts: await mountsBelow(join(sys.dir, 'docker')),
      dataRootMounts: await mountsBelow(sys.dataRoot),
    }).toEqual({ docker: [], kubelet: [], rootfs: [], containers: [], mounts: [], dataRootMounts: [] });
    expect(existsSync(keep.rootfs.dir) || existsSync(gone.rootfs.dir)).toBe(false);
  });
});
