/** The lifecycle composed, without a network: an in-memory table and fake services. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { startBootReconcile } from './boot-settle.js';
import type { MgrConfig } from './container-config.js';
import { createCore, type Core } from './core.js';
import type { Manager } from './manager.js';
import type { NetnsMembers } from './netns.js';
import type { HostChecks, HostFacts } from './probes.js';
import type { ContainerRecord } from './record.js';
import { fakeClient, type FakeClient, type FakeHandler } from '../test/fake-client.js';
import { createMemoryStore, type MemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { parseRequest } from './wire.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gw-manager-'));
  await writeFile(join(dir, 'subid'), 'sysbox:165536:1048576\n');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const facts: HostFacts = {
  kernelRelease: '6.8.0',
  hostDistro: 'debian',
  hostKernelHdrPath: '/usr/src/linux-headers-6.8.0',
  linuxHeaderMounts: [],
  libModMounts: [],
  idMapMountOk: true,
  overlayfsOnIDMapMountOk: false,
  binfmtMiscNamespaced: true,
};

const host: HostChecks = {
  isOnOverlay: async () => false,
  overlayUpperDir: async () => undefined,
  inodeOf: async () => 4026532001,
  distroOf: async () => undefined,
  idMapMountSupportedOnPath: async () => false,
  exists: async () => true,
};

const BOOT_1 = '11111111-1111-4111-8111-111111111111';
const BOOT_2 = '22222222-2222-4222-8222-222222222222';

interface Rig {
  manager: Manager;
  core: Core;
  client: FakeClient;
  containers: MemoryStore<ContainerRecord>;
  watches: [string, string | undefined][];
}

function rig(
  handlers: Record<string, FakeHandler> = {},
  autoRemove?: (id: string) => Promise<boolean>,
  /** Stands for a gateway that remembers nothing (a standby just started): every read goes to the store. */
  memory?: { forgetful: true; reads: string[] },
  /** The boot the manager runs in, and the table it finds (another boot's, for a reboot). */
  boot: { bootId?: string; containers?: MemoryStore<ContainerRecord> } = {},
): Rig {
  const client = fakeClient({
    'subid.alloc': (p) => ({ uid: 165536, gid: 165536, size: p.size }),
    'rootfs.create-clone': (p) => ({
      rootfs: `/var/lib/sysbox/rootfs/${p.id}/overlay2/merged`,
      origWorkDir: '/var/lib/docker/overlay2/x',
    }),
    'shiftfs.mark': (p) => ({ mounts: p.mounts }),
    'vol.docker-create': (p) => ({
      mounts: [
        { source: `/var/lib/sysbox/docker/${p.id}`, destination: p.mountpoint, type: 'bind', options: [] },
      ],
    }),
    ...handlers,
  });
  const containers = boot.containers ?? createMemoryStore<ContainerRecord>();
  const watches: [string, string | undefined][] = [];
  const core = createCore({
    services: client,
    containers: memory
      ? {
          ...containers,
          peek: () => undefined,
          get: (k: string) => (memory.reads.push(k), containers.get(k)),
        }
      : containers,
    netns: createMemoryStore<NetnsMembers>(),
    host,
    facts,
    config: { syscontMode: true, mountBinfmtMisc: true } as MgrConfig,
    timeouts: { opMs: 100, longOpMs: 1000 },
    clock: () => new Date(0),
    log: silentLogger(),
    replyChecks: {
      dataRoot: '/var/lib/sysbox',
      subuidFile: join(dir, 'subid'),
      subgidFile: join(dir, 'subid'),
    },
    autoRemove,
    bootId: boot.bootId ?? BOOT_1,
  });
  core.table.onWatchChange((id, path) => void watches.push([id, path]));
  return { manager: core.manager, core, client, containers, watches };
}

/** The boot settle the gateway starts at start, over the table as it is now. */
const reconcileBoot = async ({ core }: Rig) =>
  startBootReconcile({
    records: await core.table.list(),
    table: core.table,
    settle: core.settleBoot,
    bootId: core.bootId,
    retry: { firstMs: 10, maxMs: 10 },
    log: silentLogger(),
  });

const register = (m: Manager, id: string) =>
  m.register(
    parseRequest('Register', {
      id,
      rootfs: `/var/lib/docker/overlay2/${id}/merged`,
      userns: '',
      netns: '',
      uidMappings: [],
      gidMappings: [],
    }),
  );

describe('lifecycle', () => {
  it('registers a new container with a create and no read; a restart or a second Register finds the record after the create is refused', async () => {
    const memory = { forgetful: true as const, reads: [] as string[] };
    const { manager, containers } = rig({}, undefined, memory);
    await register(manager, 'c1');
    expect(memory.reads).toEqual([]);
    expect(containers.snapshot().get('c1')?.state).toBe('started');
    await expect(register(manager, 'c1')).rejects.toMatchObject({
      code: 'failed-precondition',
      message: expect.stringMatching(/redundant/),
    });
    await manager.unregister({ id: 'c1' });
    memory.reads.length = 0;
    await register(manager, 'c1');
    expect(memory.reads).toEqual(['c1']);
    expect(containers.snapshot().get('c1')?.state).toBe('restarted');
  });

  it('a restarted container gets its earlier mounts and ids back without asking a service', async () => {
    const { manager, client, watches } = rig();
    await register(manager, 'c1');
    await manager.subidAlloc({ id: 'c1', size: 65536 });
    const mounts = await manager.reqMounts({
      id: 'c1',
      rootfsUidShiftType: 4,
      reqList: [{ kind: 'docker', dest: '/var/lib/docker' }],
    });
    expect(mounts.map((m) => m.source)).toEqual(['/var/lib/sysbox/docker/c1', 'binfmt_misc']);
    await manager.unregister({ id: 'c1' });
    expect(watches).toEqual([['c1', '/var/lib/docker/overlay2/c1']]);
    await expect(manager.unregister({ id: 'c1' })).rejects.toMatchObject({ code: 'failed-precondition' });

    client.calls.length = 0;
    const cfg = await register(manager, 'c1');
    expect(cfg.uidMappings).toEqual([{ containerId: 0, hostId: 165536, size: 65536 }]);
    expect(await manager.subidAlloc({ id: 'c1', size: 65536 })).toEqual({ uid: 165536, gid: 165536 });
    expect(
      await manager.reqMounts({
        id: 'c1',
        rootfsUidShiftType: 99,
        reqList: [{ kind: 'docker', dest: '/var/lib/docker' }],
      }),
    ).toEqual(mounts);
    expect(client.calls).toEqual([]);
    await expect(register(manager, 'c1')).rejects.toMatchObject({ code: 'failed-precondition' });
  });

  it('a container Docker removes when it stops (--rm) gets no sync-out at Unregister, as upstream', async () => {
    const { manager, client, containers } = rig({}, async (id) => id === 'rm1');
    for (const id of ['rm1', 'keep1']) {
      await register(manager, id);
      await manager.subidAlloc({ id, size: 65536 });
      await manager.reqMounts({
        id,
        rootfsUidShiftType: 4,
        reqList: [{ kind: 'docker', dest: '/var/lib/docker' }],
      });
    }
    // The check runs in the background, as upstream's goroutine does.
    for (let i = 0; i < 50 && !containers.snapshot().get('rm1')?.autoRemove; i++)
      await new Promise((r) => setTimeout(r, 10));
    expect(containers.snapshot().get('rm1')?.autoRemove).toBe(true);
    expect(containers.snapshot().get('keep1')?.autoRemove).toBe(false);
    client.calls.length = 0;
    await manager.unregister({ id: 'rm1' });
    await manager.unregister({ id: 'keep1' });
    expect(client.calls.filter((c) => c.op === 'vol.docker-sync-out').map((c) => c.req.id)).toEqual([
      'keep1',
    ]);
  });

  it('a subid call that never answered leaves the container unmapped, and removal frees its id anyway', async () => {
    const { manager, containers } = rig({
      'subid.alloc': () => {
        throw new SysboxError('timeout', 'no answer');
      },
    });
    await register(manager, 'c1');
    await expect(manager.subidAlloc({ id: 'c1', size: 65536 })).rejects.toMatchObject({
      code: 'timeout',
      message: expect.stringMatching(/^container c1: subid allocation: /),
    });
    expect(containers.snapshot().get('c1')).toMatchObject({ subidAllocated: false, uidMappings: [] });
  });

  it('refuses a subid range outside the delegated ones and keeps the container unmapped', async () => {
    const { manager, containers } = rig({ 'subid.alloc': (p) => ({ uid: 0, gid: 0, size: p.size }) });
    await register(manager, 'c1');
    await expect(manager.subidAlloc({ id: 'c1', size: 65536 })).rejects.toMatchObject({ code: 'internal' });
    expect(containers.snapshot().get('c1')?.uidMappings).toEqual([]);
  });

  it('adopts a clone only when an earlier ReqCloneRootfs asked for it; Unregister watches the adopted clone', async () => {
    const exists = () => {
      throw new SysboxError('already-exists', 'clone exists');
    };
    const list = () => ({
      clones: [
        { id: 'c1', cloneRootfs: '/var/lib/sysbox/rootfs/c1/overlay2/merged', origWorkDir: '/ovl/c1' },
      ],
      uppers: [],
    });
    const fresh = rig({ 'rootfs.create-clone': exists, 'rootfs.list': list });
    await register(fresh.manager, 'c1');
    await expect(fresh.manager.cloneRootfs({ id: 'c1' })).rejects.toMatchObject({ code: 'already-exists' });
    expect(fresh.client.ops()).toEqual(['rootfs.create-clone']);
    // That failed call left its intent: the retry adopts the clone.
    expect(await fresh.manager.cloneRootfs({ id: 'c1' })).toBe('/var/lib/sysbox/rootfs/c1/overlay2/merged');
    expect(fresh.containers.snapshot().get('c1')).toMatchObject({
      rootfsCloned: true,
      rmWatchPath: '/ovl/c1/work',
      requested: { clone: false },
    });

    const lost = rig({
      'rootfs.create-clone': () => {
        throw new SysboxError('timeout', 'lost');
      },
      'rootfs.list': list,
    });
    await register(lost.manager, 'c1');
    await expect(lost.manager.cloneRootfs({ id: 'c1' })).rejects.toMatchObject({ code: 'timeout' });
    await lost.manager.unregister({ id: 'c1' });
    expect(lost.watches).toEqual([['c1', '/ovl/c1/work']]);
    expect(lost.client.ops()).toContain('rootfs.container-stopped');
  });

  it('answers not-found naming the container; removal of an unknown one does nothing', async () => {
    const { manager, core } = rig();
    await expect(manager.pause({ id: 'nope' })).rejects.toMatchObject({
      code: 'not-found',
      message: expect.stringContaining('nope'),
    });
    expect(await core.table.get('nope')).toBeUndefined();
    expect(await core.removeContainer('nope')).toBe(false);
  });
});

describe('after a reboot (issue #25)', () => {
  const DOCKER = [{ kind: 'docker' as const, dest: '/var/lib/docker' }];
  /** A container running in boot 1 with a range, a docker volume, a clone and a shiftfs mark. */
  const runningInBoot1 = async (id: string) => {
    const before = rig();
    await register(before.manager, id);
    await before.manager.subidAlloc({ id, size: 65536 });
    await before.manager.cloneRootfs({ id });
    const mounts = await before.manager.reqMounts({ id, rootfsUidShiftType: 4, reqList: DOCKER });
    await before.manager.reqShiftfsMark({
      id,
      shiftfsMarks: [{ source: '/lib/modules/6.8.0', readonly: true }],
    });
    return { containers: before.containers, mounts };
  };

  it('Register of a container that ran in the earlier boot restarts it with its volume and range, and a new clone', async () => {
    const { containers, mounts } = await runningInBoot1('c1');
    const after = rig({}, undefined, undefined, { bootId: BOOT_2, containers });
    await register(after.manager, 'c1');
    expect(containers.snapshot().get('c1')).toMatchObject({
      state: 'restarted',
      boot: BOOT_2,
      rootfs: '/var/lib/docker/overlay2/c1/merged',
      rmWatchPath: '/var/lib/docker/overlay2/c1',
      rootfsCloned: false,
      requested: { clone: true, shiftfs: [] },
      shiftfsMarks: [],
      subidAllocated: true,
    });
    // Kept: the range and the volume, without asking their services again.
    expect(await after.manager.subidAlloc({ id: 'c1', size: 65536 })).toEqual({ uid: 165536, gid: 165536 });
    expect(await after.manager.reqMounts({ id: 'c1', rootfsUidShiftType: 4, reqList: DOCKER })).toEqual(
      mounts,
    );
    expect(after.client.ops()).toEqual([]);
    // Mounts are not kept: a new clone, a new mark.
    await after.manager.cloneRootfs({ id: 'c1' });
    await after.manager.reqShiftfsMark({
      id: 'c1',
      shiftfsMarks: [{ source: '/lib/modules/6.8.0', readonly: true }],
    });
    expect(after.client.ops()).toEqual(['rootfs.create-clone', 'shiftfs.mark']);
    // And it lives on as any container: a second Register is redundant, Unregister stops it.
    await expect(register(after.manager, 'c1')).rejects.toMatchObject({ code: 'failed-precondition' });
    await after.manager.unregister({ id: 'c1' });
    expect(containers.snapshot().get('c1')?.state).toBe('stopped');
  });

  it('at start, every container of the earlier boot is stopped and watched; what Unregister undoes on disk is undone', async () => {
    const { containers } = await runningInBoot1('c1');
    await containers.mutate('c1', (r) => r && { ...r, rootfsOvfsUpperChowned: true, mountsPrepped: true });
    const stopped = rig();
    await register(stopped.manager, 'c2');
    await stopped.manager.unregister({ id: 'c2' });
    await containers.create('c2', stopped.containers.snapshot().get('c2')!);

    const after = rig({}, undefined, undefined, { bootId: BOOT_2, containers });
    const settle = await reconcileBoot(after);
    await settle.done;
    expect(after.client.ops().sort()).toEqual(['rootfs.revert-upper', 'vol.revert-prep']);
    for (const id of ['c1', 'c2'])
      expect(containers.snapshot().get(id)).toMatchObject({
        state: 'stopped',
        boot: BOOT_2,
        shiftfsMarks: [],
      });
    expect(containers.snapshot().get('c1')).toMatchObject({
      rootfsOvfsUpperChowned: false,
      mountsPrepped: false,
      rootfsCloned: false,
      requested: { clone: true },
    });
    // c1 had a clone: watched at the runtime's work dir (the fake's origWorkDir), not at the
    // work/work inside it that a mount of the overlay deletes and makes again (boot.ts).
    expect(after.watches.sort()).toEqual([
      ['c1', '/var/lib/docker/overlay2/x'],
      ['c2', '/var/lib/docker/overlay2/c2'],
    ]);
    // Removal then releases what the container kept, the clone included (not-found = gone).
    after.client.calls.length = 0;
    expect(await after.core.removeContainer('c1')).toBe(true);
    expect(after.client.ops().sort()).toEqual(['rootfs.remove-clone', 'subid.free', 'vol.docker-destroy']);
    expect(containers.snapshot().has('c1')).toBe(false);
    await settle.stop();
  });

  it('a settle that a service refuses is tried again, and Register waits for it', async () => {
    const { containers } = await runningInBoot1('c1');
    await containers.mutate('c1', (r) => r && { ...r, rootfsOvfsUpperChowned: true });
    let refuse = true;
    const after = rig(
      {
        'rootfs.revert-upper': () => {
          if (refuse) throw new SysboxError('unavailable', 'not up yet');
          return {};
        },
      },
      undefined,
      undefined,
      { bootId: BOOT_2, containers },
    );
    const settle = await reconcileBoot(after);
    await expect(register(after.manager, 'c1')).rejects.toMatchObject({ code: 'unavailable' });
    expect(containers.snapshot().get('c1')).toMatchObject({ state: 'started', boot: BOOT_1 });
    refuse = false;
    await settle.done;
    expect(containers.snapshot().get('c1')).toMatchObject({ state: 'stopped', boot: BOOT_2 });
    await register(after.manager, 'c1');
    expect(containers.snapshot().get('c1')?.state).toBe('restarted');
    await settle.stop();
  });

  it('a record an older gateway wrote (no boot) is taken for this boot and stamped', async () => {
    const { containers } = await runningInBoot1('c1');
    await containers.mutate('c1', (r) => r && { ...r, boot: undefined });
    const after = rig({}, undefined, undefined, { bootId: BOOT_2, containers });
    await (
      await reconcileBoot(after)
    ).done;
    expect(containers.snapshot().get('c1')).toMatchObject({
      state: 'started',
      boot: BOOT_2,
      rootfsCloned: true,
    });
    expect(after.client.ops()).toEqual([]);
    await expect(register(after.manager, 'c1')).rejects.toMatchObject({ code: 'failed-precondition' });
  });
});
