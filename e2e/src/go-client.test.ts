/**
 * Scenario: the field client. sysbox-runc talks to the manager through sysbox-ipc's Go client,
 * built with grpc-go; grpc-go before 1.57 (sysbox-ipc pinned 1.34.1 from 2022-01 to 2024-05)
 * sends the dial target, the socket path, as the HTTP/2 :authority, newer builds `localhost`.
 * e2e/go-client is a client of ours built here with Debian's grpc-go 1.33 that dials as
 * sysbox-ipc does (one connection per call, the path as target, a unix dialer, insecure) and
 * drives a chown-mode container in sysbox-runc's order; each authority gets a whole lifecycle
 * against the real system, checked on the host, then Docker's removal releases everything.
 */
import { existsSync, statSync } from 'node:fs';
import { chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { VOLUME_LAYOUT, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { run, startProcess } from '@sysbox-mgr-ts/exec';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, rpc, statusOf, type SysboxMgrClient } from './grpc.js';
import { repoRoot, startSystem, type System } from './harness.js';
import { cleanUpLikeARuntime } from './lifecycle.js';
import {
  buildImage,
  entries,
  mountContainerRootfs,
  mountsBelow,
  mountsOf,
  owner,
  removeLikeDocker,
  servicesState,
  text,
  until,
  type ContainerRootfs,
  type ImageLayers,
} from './runtime.js';

const BUILD = join(repoRoot, 'e2e', 'go-client', 'build.sh');

/** What `sysbox-mgr-go-client lifecycle` prints. */
interface Summary {
  ok: boolean;
  error?: string;
  failedCall?: string;
  goVersion: string;
  grpcVersion: string;
  rootfsUidShiftType: number;
  uid: number;
  gid: number;
  rootfs: string;
  prepared: string[] | null;
  mounts: { source: string; dest: string; type: string; opt: string[] }[] | null;
  fsEntries: string[] | null;
  calls: { method: string; ms: number }[];
}

/** sysbox-runc's calls for a chown-mode container with a cloned rootfs and one host bind over a special dir. */
const RUNC_ORDER = [
  'Register',
  'SubidAlloc',
  'ReqCloneRootfs',
  'PrepMounts',
  'ReqMounts',
  'ReqFsState',
  'ChownClonedRootfs',
  'Update',
  'Pause',
  'Resume',
  'RevertClonedRootfsChown',
  'Unregister',
];

/** The special dir the spec binds from the host (PrepMounts); ReqMounts asks for the six others. */
const BOUND_KIND: VolumeKind = 'buildkit';

describe('Go client (grpc-go 1.33, dialing as sysbox-ipc) through the gateway', () => {
  let sys: System;
  let client: SysboxMgrClient;
  let bin: string;
  let overlay2: string;
  let image: ImageLayers;

  beforeAll(async () => {
    // Built once per run; the Go build cache (e2e/go-client/.build) makes a rebuild ~2 s.
    // A missing toolchain fails here, naming the Debian packages (tools/install-deps.sh).
    bin = (await run('bash', [BUILD], { timeout: 300_000 })).stdout.trim().split('\n').at(-1)!;
    sys = await startSystem({ args: { gateway: ['--disable-ovfs-on-idmapped-mount'] } });
    client = connectGateway(sys.socket);
    overlay2 = join(sys.dir, 'docker', 'overlay2');
    image = await buildImage(overlay2, 'img');
  }, 300_000);
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  /**
   * Runs `lifecycle`, held after `holdAfter` while `whileHeld` checks the host (skipped when
   * the client fails before it); answers its summary and stderr.
   */
  async function runLifecycle(
    args: string[],
    holdAfter: string,
    whileHeld: () => Promise<void>,
  ): Promise<{ summary: Summary; stderr: string }> {
    const proc = startProcess(bin, ['lifecycle', ...args, '-hold-after', holdAfter]);
    let stdout = '';
    let stderr = '';
    let onHeld = () => {};
    const held = new Promise<void>((r) => (onHeld = r));
    proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`held after ${holdAfter}\n`)) onHeld();
    });
    await Promise.race([held, proc]);
    if (proc.exitCode === null) {
      try {
        await whileHeld();
      } finally {
        proc.kill('SIGUSR1');
      }
    }
    await proc;
    return { summary: JSON.parse(stdout) as Summary, stderr };
  }

  it('sends the socket path as :authority by default and localhost with WithAuthority (on the wire)', async () => {
    // The client dials a socket the probe serves, which reads its first HEADERS frame.
    const probe = async (name: string, extra: string[]) => {
      const socket = join(sys.dir, name);
      const r = await run(bin, ['authority', '-socket', socket, ...extra], { timeout: 30_000 });
      return { socket, sent: JSON.parse(r.stdout) as { authority: string; grpcVersion: string } };
    };
    const byDefault = await probe('probe-default.sock', []);
    expect(byDefault.sent).toEqual({ authority: byDefault.socket, grpcVersion: '1.33.3' });
    const withAuthority = await probe('probe-localhost.sock', ['-authority', 'localhost']);
    expect(withAuthority.sent).toEqual({ authority: 'localhost', grpcVersion: '1.33.3' });
  });

  const modes = [
    { name: 'the socket path as :authority (grpc-go < 1.57)', id: 'go-path', args: [] },
    {
      name: 'localhost as :authority (grpc-go >= 1.57)',
      id: 'go-localhost',
      args: ['-authority', 'localhost'],
    },
  ];

  for (const mode of modes) {
    it(`whole lifecycle with ${mode.name}; Docker's removal releases everything`, async () => {
      showLogs();
      const id = mode.id;
      const rootfs: ContainerRootfs = await mountContainerRootfs(overlay2, id, image);
      // A host dir the spec binds over /var/lib/buildkit: root's and user 1000's files.
      const bound = join(sys.dir, 'host', id, 'buildkit');
      await mkdir(join(bound, 'cache'), { recursive: true });
      await writeFile(join(bound, 'cache', 'blob'), 'cached layer\n');
      await chown(join(bound, 'cache', 'blob'), 1000, 1000);
      const boundOwners = () => [owner(bound), owner(join(bound, 'cache', 'blob'))];
      let finished = false;
      try {
        const requested = (Object.keys(VOLUME_LAYOUT) as VolumeKind[]).filter((k) => k !== BOUND_KIND);
        const clone = join(sys.dataRoot, 'rootfs', id, 'overlay2', 'merged');
        const docker = join(sys.dataRoot, 'docker', id);
        let ids = { uid: -1, gid: -1 };
        const { summary: s, stderr } = await runLifecycle(
          [
            '-socket',
            sys.socket,
            '-id',
            id,
            '-rootfs',
            rootfs.merged,
            '-bind',
            `${bound}:${VOLUME_LAYOUT[BOUND_KIND].mountpoint}`,
            ...mode.args,
          ],
          'Update',
          async () => {
            // Running (create and start done): the clone chowned by the container's offset,
            // the bind source shifted for it, its volumes owned by its root.
            const state = await servicesState(sys);
            const alloc = state.subid.allocations.find((a) => a.id === id);
            expect(alloc).toBeDefined();
            ids = { uid: alloc!.uid, gid: alloc!.gid };
            const { uid, gid } = ids;
            expect(owner(join(clone, 'etc', 'os-release'))).toBe(`${uid}:${gid}`);
            expect(owner(join(clone, 'home', 'user', 'notes.txt'))).toBe(`${uid + 1000}:${gid + 1000}`);
            expect(boundOwners()).toEqual([`${uid}:${gid}`, `${uid + 1000}:${gid + 1000}`]);
            expect(state.vol.preps).toMatchObject([{ source: bound, holders: [id] }]);
            expect(owner(docker)).toBe(`${uid}:${gid}`);
            expect(state.vol.volumes.map((v) => v.kind).sort()).toEqual([...requested].sort());
            expect(state.rootfs.clones).toMatchObject([{ id, chowned: true, mounted: true }]);
          },
        );
        // The client's own message names the failing call and grpc-go's status.
        expect(s.error ?? '', stderr).toBe('');
        expect(s.ok).toBe(true);
        expect(s.grpcVersion).toBe('1.33.3');
        expect(s.calls.map((c) => c.method)).toEqual(RUNC_ORDER);

        // What the calls answered: subids, the clone, one volume per requested kind.
        expect({ uid: s.uid, gid: s.gid }).toEqual(ids);
        expect(s.rootfs).toBe(clone);
        expect(s.prepared).toEqual([bound]);
        const volumes = s.mounts!.filter((m) => m.source.startsWith(`${sys.dataRoot}/`));
        expect(volumes).toEqual(
          requested.map((k) => ({
            source: join(sys.dataRoot, VOLUME_LAYOUT[k].hostDir, id),
            dest: VOLUME_LAYOUT[k].mountpoint,
            type: 'bind',
            opt: ['rbind', 'rprivate'],
          })),
        );

        // After stop (RevertClonedRootfsChown, Unregister): volumes kept and owned by the
        // container's root, the docker one synced in from the image; the clone unchowned but
        // still mounted for a restart; the bind source given back its owners; subids kept.
        expect(statSync(docker).mode & 0o777).toBe(0o700);
        expect(owner(docker)).toBe(`${s.uid}:${s.gid}`);
        expect(await text(join(docker, 'image', 'overlay2', 'repositories.json'))).toContain('busybox');
        expect((await mountsOf(s.rootfs))[0]?.fsType).toBe('overlay');
        expect(owner(join(s.rootfs, 'etc', 'os-release'))).toBe('0:0');
        expect(boundOwners()).toEqual(['0:0', '1000:1000']);
        const state = await servicesState(sys);
        expect(state.subid.allocations.map((a) => a.id)).toEqual([id]);
        expect(state.vol.volumes.filter((v) => v.id === id).map((v) => v.kind)).toEqual(
          expect.arrayContaining(requested),
        );
        expect(state.vol.volumes).toHaveLength(requested.length);
        expect(state.vol.preps).toEqual([]);
        expect(state.rootfs.clones).toMatchObject([{ id, chowned: false, mounted: true }]);

        // docker rm: the removal watch releases volumes, subids and the clone.
        await removeLikeDocker(rootfs, async () => {
          await until(
            `release of ${id}`,
            async () => (await statusOf(rpc(client, 'Pause', { id })))?.code === status.NOT_FOUND,
          );
        });
        expect(await mountsBelow(sys.dataRoot)).toEqual([]);
        for (const k of requested) expect(entries(join(sys.dataRoot, VOLUME_LAYOUT[k].hostDir))).toEqual([]);
        expect(existsSync(join(sys.dataRoot, 'rootfs', id))).toBe(false);
        const after = await servicesState(sys);
        expect(after.subid.allocations).toEqual([]);
        expect(after.vol.volumes).toEqual([]);
        expect(after.rootfs.clones).toEqual([]);
        finished = true;
      } finally {
        // A failed lifecycle is cleaned up as a runtime would, so the next mode starts clean.
        if (!finished) await cleanUpLikeARuntime(() => client, { id, rootfs });
      }
    });
  }
});
