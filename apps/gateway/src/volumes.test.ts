import { describe, expect, it } from 'vitest';
import { SysboxError, VOLUME_KINDS, type OciMount, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { ShiftType, type ContainerRecord } from './record.js';
import { createReplyChecks } from './reply-checks.js';
import { serviceCaller } from './service-call.js';
import { fakeClient, type FakeClient } from '../test/fake-client.js';
import { createMemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { aRecord } from '../test/records.js';
import { createVolumePolicy } from './volumes.js';
import type { MgrConfig } from './container-config.js';
import { createCore } from './core.js';
import type { NetnsMembers } from './netns.js';
import { hasVolumeMount, volumeOwnership } from './plans/mounts.js';
import type { HostChecks, HostFacts } from './probes.js';

const HOST_IDS = [{ containerId: 0, hostId: 231072, size: 65536 }];
const HEADERS: OciMount = { source: '/usr/src/h', destination: '/usr/src/h', type: 'bind', options: ['ro'] };

describe('volume ownership by rootfs ID-shift type', () => {
  const rec = aRecord({ id: 'c1', uidMappings: HOST_IDS, gidMappings: HOST_IDS });
  it.each([
    ['NoShift', ShiftType.NoShift, { uid: 231072, gid: 231072 }, false],
    ['Shiftfs', ShiftType.Shiftfs, { uid: 231072, gid: 231072 }, true],
    ['IDMappedMount', ShiftType.IDMappedMount, { uid: 0, gid: 0 }, false],
    ['Chown', ShiftType.Chown, { uid: 231072, gid: 231072 }, true],
  ] as const)('%s: owner %j, chown on sync %s', (_, type, owner, chownOnSync) => {
    expect(volumeOwnership(rec, type)).toEqual({ owner, chownOnSync });
  });

  it.each([ShiftType.IDMappedMountOrShiftfs, 5, 99])('refuses shift type %i', (type) => {
    expect(() => volumeOwnership(rec, type)).toThrow(
      expect.objectContaining({
        code: 'invalid-request',
        message: `container c1: unexpected rootfs ID shift type ${type}`,
      }),
    );
  });

  it('needs a host mapping for every type but ID-mapped', () => {
    const unmapped = aRecord({ id: 'c1', uidMappings: [], gidMappings: [] });
    expect(volumeOwnership(unmapped, ShiftType.IDMappedMount).owner).toEqual({ uid: 0, gid: 0 });
    for (const type of [ShiftType.NoShift, ShiftType.Shiftfs, ShiftType.Chown]) {
      expect(() => volumeOwnership(unmapped, type)).toThrow(
        expect.objectContaining({ code: 'failed-precondition' }),
      );
    }
  });
});

/** vol-mgr's create answer: the volume's dir under /var/lib/sysbox. */
const createdVolume = (kind: VolumeKind, p: { id: string; mountpoint: string }) => ({
  mounts: [
    {
      source: `/var/lib/sysbox/${kind === 'k3s' ? 'rancher-k3s' : kind}/${p.id}`,
      destination: p.mountpoint,
      type: 'bind',
      options: ['rbind', 'rprivate'],
    },
  ],
});

/** vol-mgr as data: create answers createdVolume; `volumes` is what list answers. */
function volMgr(
  over: Record<string, (p: any) => unknown> = {},
  volumes: { id: string; path: string; mountpoint: string }[] = [],
): FakeClient {
  const handlers: Record<string, (p: any) => unknown> = { 'vol.list': () => ({ volumes, preps: [] }) };
  for (const kind of VOLUME_KINDS) handlers[`vol.${kind}-create`] = (p) => createdVolume(kind, p);
  return fakeClient({ ...handlers, ...over });
}

/** ReqMounts as the manager runs it (plans/mounts.ts, volumes.ts, the table), over memory stores. */
function rig(client: FakeClient, rec: ContainerRecord, opts: { noInnerImgPreload?: boolean } = {}) {
  const store = createMemoryStore<ContainerRecord>({ initial: { [rec.id]: rec } });
  const log = silentLogger();
  const checks = createReplyChecks(
    { dataRoot: '/var/lib/sysbox', subuidFile: '/nonexistent', subgidFile: '/nonexistent' },
    log,
  );
  const volumes = createVolumePolicy({
    call: serviceCaller(client, { opMs: 100, longOpMs: 1000 }),
    checks,
    noInnerImgPreload: opts.noInnerImgPreload ?? false,
    log,
  });
  const core = createCore({
    services: client,
    containers: store,
    netns: createMemoryStore<NetnsMembers>(),
    host: {} as HostChecks,
    facts: { linuxHeaderMounts: [HEADERS], libModMounts: [] } as unknown as HostFacts,
    config: { mountBinfmtMisc: false, noInnerImgPreload: false } as MgrConfig,
    timeouts: { opMs: 100, longOpMs: 1000 },
    clock: () => new Date(0),
    log,
    replyChecks: { dataRoot: '/var/lib/sysbox', subuidFile: '/nonexistent', subgidFile: '/nonexistent' },
    bootId: '11111111-1111-4111-8111-111111111111',
  });
  const policy = {
    create: (r: ContainerRecord, rootfsUidShiftType: number, reqList: { kind: VolumeKind; dest: string }[]) =>
      core.manager.reqMounts({ id: r.id, rootfsUidShiftType, reqList }),
    syncOut: volumes.syncOut,
  };
  return { store, policy };
}

describe('volume creation', () => {
  it('creates with the ownership of the shift type and records kinds and mounts', async () => {
    const client = volMgr();
    const rec = aRecord({ id: 'c1', uidMappings: HOST_IDS, gidMappings: HOST_IDS });
    const { store, policy } = rig(client, rec);
    await policy.create(rec, ShiftType.Chown, [
      { kind: 'docker', dest: '/var/lib/docker' },
      { kind: 'k3s', dest: '/var/lib/rancher/k3s' },
    ]);
    expect(client.calls[0]).toEqual({
      op: 'vol.docker-create',
      req: {
        id: 'c1',
        rootfs: rec.rootfs,
        mountpoint: '/var/lib/docker',
        uid: 231072,
        gid: 231072,
        chownOnSync: true,
        perm: 0o700,
        timeLimit: 'unbounded',
      },
    });
    expect(client.ops()).toEqual(['vol.docker-create', 'vol.k3s-create']);
    const stored = store.snapshot().get('c1')!;
    expect(stored.volumeKinds).toEqual(['docker', 'k3s']);
    expect(stored.containerMounts.map((m) => m.source)).toEqual([
      '/var/lib/sysbox/docker/c1',
      '/var/lib/sysbox/rancher-k3s/c1',
      '/usr/src/h',
    ]);
    expect(hasVolumeMount(stored, 'k3s')).toBe(true);
    expect(hasVolumeMount(stored, 'kubelet')).toBe(false);
  });

  it('records the kinds before creating, and keeps the mounts made when one create fails', async () => {
    // The create that succeeds answers last: the failure waits for it before it is raised.
    let dockerFinished = false;
    const client = volMgr({
      'vol.docker-create': async (p) => {
        await new Promise((r) => setTimeout(r, 20));
        dockerFinished = true;
        return createdVolume('docker', p);
      },
      'vol.kubelet-create': () => {
        throw new SysboxError('internal', 'disk full');
      },
    });
    const rec = aRecord({ id: 'c1' });
    const { store, policy } = rig(client, rec);
    await expect(
      policy.create(rec, ShiftType.IDMappedMount, [
        { kind: 'docker', dest: '/var/lib/docker' },
        { kind: 'kubelet', dest: '/var/lib/kubelet' },
      ]),
    ).rejects.toMatchObject({
      code: 'internal',
      message: 'container c1: failed to setup mounts backing /var/lib/kubelet: disk full',
    });
    expect(dockerFinished).toBe(true);
    const stored = store.snapshot().get('c1')!;
    expect(stored.volumeKinds).toEqual(['docker', 'kubelet']);
    expect(stored.containerMounts.map((m) => m.source)).toEqual(['/var/lib/sysbox/docker/c1', '/usr/src/h']);
  });

  it('runs the creates at once and answers the mounts in request order', async () => {
    // The docker create answers only once the kubelet one has been asked for and has answered:
    // one after another, this would never end.
    let kubeletDone!: () => void;
    const kubeletAnswered = new Promise<void>((r) => (kubeletDone = r));
    const client = volMgr({
      'vol.docker-create': async (p) => {
        await kubeletAnswered;
        return createdVolume('docker', p);
      },
      'vol.kubelet-create': (p) => {
        kubeletDone();
        return createdVolume('kubelet', p);
      },
    });
    const rec = aRecord({ id: 'c1' });
    const { store, policy } = rig(client, rec);
    await policy.create(rec, ShiftType.IDMappedMount, [
      { kind: 'docker', dest: '/var/lib/docker' },
      { kind: 'kubelet', dest: '/var/lib/kubelet' },
    ]);
    expect(
      store
        .snapshot()
        .get('c1')!
        .containerMounts.map((m) => m.source),
    ).toEqual(['/var/lib/sysbox/docker/c1', '/var/lib/sysbox/kubelet/c1', '/usr/src/h']);
  });

  it('refuses a kind asked twice before creating anything', async () => {
    const client = volMgr();
    const rec = aRecord({ id: 'c1' });
    const { policy } = rig(client, rec);
    await expect(
      policy.create(rec, ShiftType.IDMappedMount, [
        { kind: 'docker', dest: '/a' },
        { kind: 'docker', dest: '/b' },
      ]),
    ).rejects.toMatchObject({ code: 'already-exists' });
    expect(client.ops()).toEqual([]);
  });

  it('refuses a shift type it has no rule for before recording anything', async () => {
    const client = volMgr();
    const rec = aRecord({ id: 'c1' });
    const { store, policy } = rig(client, rec);
    await expect(policy.create(rec, 3, [{ kind: 'docker', dest: '/var/lib/docker' }])).rejects.toMatchObject({
      code: 'invalid-request',
    });
    expect(client.calls).toEqual([]);
    expect(store.snapshot().get('c1')!.volumeKinds).toEqual([]);
  });

  const exists = () => {
    throw new SysboxError('already-exists', 'volume exists');
  };

  it('adopts a volume an earlier, unanswered call made (its kind recorded, no mount on record)', async () => {
    const client = volMgr({ 'vol.docker-create': exists }, [
      { id: 'c1', path: '/var/lib/sysbox/docker/c1', mountpoint: '/var/lib/docker' },
    ]);
    const rec = aRecord({ id: 'c1', volumeKinds: ['docker'] });
    const { store, policy } = rig(client, rec);
    await policy.create(rec, ShiftType.IDMappedMount, [{ kind: 'docker', dest: '/var/lib/docker' }]);
    expect(client.ops()).toEqual(['vol.docker-create', 'vol.list']);
    expect(client.calls[1]!.req).toEqual({ kind: 'docker' });
    expect(store.snapshot().get('c1')!.containerMounts[0]).toEqual({
      source: '/var/lib/sysbox/docker/c1',
      destination: '/var/lib/docker',
      type: 'bind',
      options: ['rbind', 'rprivate'],
    });
  });

  it('does not adopt a kind no earlier call recorded, one already mounted, or one at another mountpoint', async () => {
    const listed = [{ id: 'c1', path: '/var/lib/sysbox/docker/c1', mountpoint: '/var/lib/docker' }];
    for (const [rec, dest] of [
      [aRecord({ id: 'c1' }), '/var/lib/docker'],
      [
        aRecord({
          id: 'c1',
          volumeKinds: ['docker'],
          containerMounts: [
            {
              source: '/var/lib/sysbox/docker/c1',
              destination: '/var/lib/docker',
              type: 'bind',
              options: [],
            },
          ],
        }),
        '/var/lib/docker',
      ],
      [aRecord({ id: 'c1', volumeKinds: ['docker'] }), '/elsewhere'],
    ] as const) {
      const client = volMgr({ 'vol.docker-create': exists }, listed);
      const { policy } = rig(client, rec);
      await expect(
        policy.create(rec, ShiftType.IDMappedMount, [{ kind: 'docker', dest }]),
      ).rejects.toMatchObject({ code: 'already-exists' });
      expect(client.ops().filter((op) => op === 'vol.list')).toHaveLength(dest === '/elsewhere' ? 1 : 0);
    }
  });

  it('refuses a created or adopted mount outside vol-mgr’s dir', async () => {
    const client = volMgr({
      'vol.docker-create': (p) => ({
        mounts: [{ source: '/etc', destination: p.mountpoint, type: 'bind', options: [] }],
      }),
    });
    const rec = aRecord({ id: 'c1' });
    const { store, policy } = rig(client, rec);
    await expect(
      policy.create(rec, ShiftType.IDMappedMount, [{ kind: 'docker', dest: '/var/lib/docker' }]),
    ).rejects.toMatchObject({ code: 'internal' });
    expect(store.snapshot().get('c1')!.containerMounts).toEqual([HEADERS]);
  });
});

describe('volume sync-out', () => {
  it.each(['timeout', 'unavailable'] as const)('retries once after %s, then succeeds', async (code) => {
    let n = 0;
    const client = volMgr({
      'vol.docker-sync-out': () => {
        if (++n === 1) throw new SysboxError(code, 'vol-mgr died mid-copy');
        return {};
      },
    });
    const rec = aRecord({ id: 'c1', volumeKinds: ['docker', 'kubelet'] });
    expect(await rig(client, rec).policy.syncOut(rec, 'Unregister')).toEqual([]);
    expect(client.ops()).toEqual(['vol.docker-sync-out', 'vol.docker-sync-out', 'vol.kubelet-sync-out']);
  });

  it('gives up after the second attempt, and never retries another failure; the other kinds still sync', async () => {
    const client = volMgr({
      'vol.docker-sync-out': () => {
        throw new SysboxError('timeout', 'slow');
      },
      'vol.kubelet-sync-out': () => {
        throw new SysboxError('internal', 'rsync failed');
      },
    });
    const rec = aRecord({ id: 'c1', volumeKinds: ['docker', 'kubelet', 'k0s'] });
    expect(await rig(client, rec).policy.syncOut(rec, 'Unregister')).toEqual(['docker', 'kubelet']);
    expect(client.ops()).toEqual([
      'vol.docker-sync-out',
      'vol.docker-sync-out',
      'vol.kubelet-sync-out',
      'vol.k0s-sync-out',
    ]);
  });

  it('does nothing with inner-image preload off', async () => {
    const client = volMgr();
    const rec = aRecord({ id: 'c1', volumeKinds: ['docker'] });
    expect(await rig(client, rec, { noInnerImgPreload: true }).policy.syncOut(rec, 'Unregister')).toEqual([]);
    expect(client.calls).toEqual([]);
  });
});
