/**
 * Scenario: the field client. sysbox-runc talks to the manager through sysbox-ipc's Go client,
 * built with grpc-go; grpc-go before 1.57 (sysbox-ipc pinned 1.34.1 from 2022-01 to 2024-05)
 * sends the dial target, the socket path, as the HTTP/2 :authority, newer builds `localhost`.
 * e2e/go-client is a client of ours built here with Debian's grpc-go 1.33 that dials as
 * sysbox-ipc does (one connection per call, the path as target, a unix dialer, insecure) and
 * drives a container in sysbox-runc's order. For each host mode (ID-mapped, chown) and each
 * authority: a whole lifecycle against the real system, checked on the host while it runs,
 * after it stops and after Docker's removal released everything.
 */
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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

/** The special dir the spec binds from the host (PrepMounts); ReqMounts asks for the six others. */
const BOUND_KIND: VolumeKind = 'buildkit';
const REQUESTED = (Object.keys(VOLUME_LAYOUT) as VolumeKind[]).filter((k) => k !== BOUND_KIND);

/**
 * The two host modes sysbox-runc picks from Register's answer for an overlayfs rootfs (without
 * metacopy), and the calls it then makes (one host bind over a special dir: PrepMounts).
 */
const HOST_MODES = [
  {
    name: 'ID-mapped mode (overlayfs on ID-mapped mounts)',
    gatewayArgs: [] as string[],
    shiftType: 2,
    calls: [
      'Register',
      'SubidAlloc',
      'PrepMounts',
      'ReqMounts',
      'ReqFsState',
      'Update',
      'Pause',
      'Resume',
      'Unregister',
    ],
  },
  {
    name: 'chown mode (a cloned rootfs)',
    gatewayArgs: ['--disable-ovfs-on-idmapped-mount'],
    shiftType: 4,
    calls: [
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
    ],
  },
];

const AUTHORITIES = [
  { name: 'the socket path as :authority (grpc-go < 1.57)', tag: 'path', args: [] as string[] },
  { name: 'localhost as :authority (grpc-go >= 1.57)', tag: 'localhost', args: ['-authority', 'localhost'] },
];

let bin: string;

/**
 * The socket-path authority is what grpc-go < 1.57 sends (Debian 12 ships 1.33.3); a newer
 * grpc-go would make the first authority case test nothing, so it fails here instead.
 */
function expectOldGrpcGo(version: string): void {
  const [major, minor] = version.split('.').map(Number);
  expect(major === 1 && minor! < 57, `grpc-go ${version}: the field client's grpc-go is < 1.57`).toBe(true);
}

beforeAll(async () => {
  // Built once per run; the Go build cache (e2e/go-client/.build) makes a rebuild ~2 s.
  // A missing toolchain fails here, naming the Debian packages (tools/install-deps.sh).
  bin = (await run('bash', [BUILD], { timeout: 300_000 })).stdout.trim().split('\n').at(-1)!;
}, 300_000);

/**
 * Runs `lifecycle`, held after `holdAfter` while `whileHeld` checks the host (skipped when the
 * client fails before it); answers its summary and stderr.
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

describe('Go client (grpc-go 1.33) on the wire', () => {
  it('sends the socket path as :authority by default and localhost with WithAuthority', async () => {
    // The client dials a socket the probe serves, which reads its first HEADERS frame.
    const dir = mkdtempSync(join(tmpdir(), 'go-client-'));
    const probe = async (name: string, extra: string[]) => {
      const socket = join(dir, name);
      const r = await run(bin, ['authority', '-socket', socket, ...extra], { timeout: 30_000 });
      return { socket, sent: JSON.parse(r.stdout) as { authority: string; grpcVersion: string } };
    };
    try {
      const byDefault = await probe('probe-default.sock', []);
      expectOldGrpcGo(byDefault.sent.grpcVersion);
      expect(byDefault.sent.authority).toBe(byDefault.socket);
      const withAuthority = await probe('probe-localhost.sock', ['-authority', 'localhost']);
      expect(withAuthority.sent.authority).toBe('localhost');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

for (const hostMode of HOST_MODES) {
  const chownMode = hostMode.shiftType === 4;

  describe(`Go client (grpc-go 1.33, dialing as sysbox-ipc) through the gateway, ${hostMode.name}`, () => {
    let sys: System;
    let client: SysboxMgrClient;
    let overlay2: string;
    let image: ImageLayers;

    beforeAll(async () => {
      sys = await startSystem({ args: { gateway: hostMode.gatewayArgs } });
      client = connectGateway(sys.socket);
      overlay2 = join(sys.dir, 'docker', 'overlay2');
      image = await buildImage(overlay2, 'img');
    });
    afterAll(async () => {
      client?.close();
      await sys?.stop();
    });
    const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

    for (const authority of AUTHORITIES) {
      it(`whole lifecycle with ${authority.name}; Docker's removal releases everything`, async () => {
        showLogs();
        const id = `go-${chownMode ? 'chown' : 'idmapped'}-${authority.tag}`;
        const rootfs: ContainerRootfs = await mountContainerRootfs(overlay2, id, image);
        // What the container wrote in an earlier life: its upper dir at rest.
        await writeFile(join(rootfs.merged, 'etc', 'hostname'), 'box\n');
        await mkdir(join(rootfs.merged, 'home', 'user', 'work'));
        await chown(join(rootfs.merged, 'home', 'user', 'work'), 1000, 1000);
        const upperOwners = () => [
          owner(join(rootfs.upper, 'etc', 'hostname')),
          owner(join(rootfs.upper, 'home', 'user', 'work')),
        ];
        // The rootfs sysbox-runc uses: the clone of the image (chown mode) or the overlay itself.
        const used = chownMode ? join(sys.dataRoot, 'rootfs', id, 'overlay2', 'merged') : rootfs.merged;
        // What start shifts: the clone's files, or the upper layer's (root's, then user 1000's).
        const shiftedOwners = chownMode
          ? () => [owner(join(used, 'etc', 'os-release')), owner(join(used, 'home', 'user', 'notes.txt'))]
          : upperOwners;
        // A host dir the spec binds over /var/lib/buildkit: root's and user 1000's files.
        const bound = join(sys.dir, 'host', id, 'buildkit');
        await mkdir(join(bound, 'cache'), { recursive: true });
        await writeFile(join(bound, 'cache', 'blob'), 'cached layer\n');
        await chown(join(bound, 'cache', 'blob'), 1000, 1000);
        const boundOwners = () => [owner(bound), owner(join(bound, 'cache', 'blob'))];
        const docker = join(sys.dataRoot, 'docker', id);
        let finished = false;
        try {
          let ids = { uid: -1, gid: -1 };
          const { summary: s, stderr } = await runLifecycle(
            [
              '-socket',
              sys.socket,
              '-id',
              id,
              '-rootfs',
              rootfs.merged,
              '-upper',
              rootfs.upper,
              '-bind',
              `${bound}:${VOLUME_LAYOUT[BOUND_KIND].mountpoint}`,
              ...authority.args,
            ],
            'Update',
            async () => {
              // Running (create and start done): the rootfs shifted by the container's offset
              // (the clone by ChownClonedRootfs; the upper layer by the runtime, recorded by
              // Update); the bind source shifted by PrepMounts where it cannot be ID-mapped
              // (chown mode); volumes for every requested kind.
              const state = await servicesState(sys);
              const alloc = state.subid.allocations.find((a) => a.id === id);
              expect(alloc).toBeDefined();
              ids = { uid: alloc!.uid, gid: alloc!.gid };
              const { uid, gid } = ids;
              const shifted = [`${uid}:${gid}`, `${uid + 1000}:${gid + 1000}`];
              expect(shiftedOwners()).toEqual(shifted);
              if (chownMode) {
                expect(boundOwners()).toEqual(shifted);
                expect(state.vol.preps).toMatchObject([{ source: bound, holders: [id] }]);
              } else {
                expect(boundOwners()).toEqual(['0:0', '1000:1000']);
                expect(state.vol.preps).toEqual([]);
              }
              // ID-mapped volumes stay root's on the host; chown mode gives them to the container.
              expect(owner(docker)).toBe(chownMode ? `${uid}:${gid}` : '0:0');
              expect(state.vol.volumes.map((v) => v.kind).sort()).toEqual([...REQUESTED].sort());
              if (chownMode)
                expect(state.rootfs.clones).toMatchObject([{ id, chowned: true, mounted: true }]);
              else expect(state.rootfs.uppers).toMatchObject([{ id }]);
            },
          );
          // The client's own message names the failing call and grpc-go's status.
          expect(s.error ?? '', stderr).toBe('');
          expect(s.ok).toBe(true);
          expectOldGrpcGo(s.grpcVersion);
          expect(s.rootfsUidShiftType).toBe(hostMode.shiftType);
          expect(s.calls.map((c) => c.method)).toEqual(hostMode.calls);

          // What the calls answered: the ids, the rootfs, one volume per requested kind.
          expect({ uid: s.uid, gid: s.gid }).toEqual(ids);
          expect(s.rootfs).toBe(used);
          expect(s.prepared).toEqual([bound]);
          const volumes = s.mounts!.filter((m) => m.source.startsWith(`${sys.dataRoot}/`));
          expect(volumes).toEqual(
            REQUESTED.map((k) => ({
              source: join(sys.dataRoot, VOLUME_LAYOUT[k].hostDir, id),
              dest: VOLUME_LAYOUT[k].mountpoint,
              type: 'bind',
              opt: ['rbind', 'rprivate'],
            })),
          );

          // After stop: the rootfs and the bind source given back their owners, the prep and
          // the upper-dir record released; volumes kept (the docker one synced in from the
          // image), subids kept, a clone kept mounted for a restart.
          expect(shiftedOwners()).toEqual(['0:0', '1000:1000']);
          expect(boundOwners()).toEqual(['0:0', '1000:1000']);
          expect(statSync(docker).mode & 0o777).toBe(0o700);
          expect(await text(join(docker, 'image', 'overlay2', 'repositories.json'))).toContain('busybox');
          expect((await mountsOf(used))[0]?.fsType).toBe('overlay');
          const state = await servicesState(sys);
          expect(state.subid.allocations.map((a) => a.id)).toEqual([id]);
          expect(state.vol.volumes.map((v) => v.kind).sort()).toEqual([...REQUESTED].sort());
          expect(state.vol.preps).toEqual([]);
          expect(state.rootfs.uppers).toEqual([]);
          expect(state.rootfs.clones).toEqual(
            chownMode ? [expect.objectContaining({ id, chowned: false })] : [],
          );

          // docker rm: the removal watch releases volumes, subids and the clone.
          await removeLikeDocker(rootfs, async () => {
            await until(
              `release of ${id}`,
              async () => (await statusOf(rpc(client, 'Pause', { id })))?.code === status.NOT_FOUND,
            );
          });
          expect(await mountsBelow(sys.dataRoot)).toEqual([]);
          for (const k of REQUESTED)
            expect(entries(join(sys.dataRoot, VOLUME_LAYOUT[k].hostDir))).toEqual([]);
          expect(existsSync(join(sys.dataRoot, 'rootfs', id))).toBe(false);
          const after = await servicesState(sys);
          expect(after.subid.allocations).toEqual([]);
          expect(after.vol.volumes).toEqual([]);
          expect(after.rootfs.clones).toEqual([]);
          finished = true;
        } finally {
          // A failed lifecycle is cleaned up as a runtime would, so the next one starts clean.
          if (!finished) await cleanUpLikeARuntime(() => client, { id, rootfs });
        }
      });
    }
  });
}
