/** ReqMounts' decisions as plain functions: no table, no service. */
import { describe, expect, it } from 'vitest';
import type { OciMount } from '@sysbox-mgr-ts/contracts';
import { aRecord } from '../../test/records.js';
import { ShiftType } from '../record.js';
import { BINFMT_MISC_MOUNT, mountsAfter, mountsAnswer, prepPlan, reqMountsPlan } from './mounts.js';

const DOCKER_MOUNT: OciMount = {
  source: '/var/lib/sysbox/docker/c1',
  destination: '/var/lib/docker',
  type: 'bind',
  options: [],
};
const HEADERS: OciMount = { source: '/usr/src/h', destination: '/usr/src/h', type: 'bind', options: ['ro'] };
const config = { mountBinfmtMisc: true } as const;
const req = (
  reqList: { kind: 'docker' | 'kubelet' | 'k3s'; dest: string }[],
  rootfsUidShiftType: number = ShiftType.Chown,
) => ({
  id: 'c1',
  rootfsUidShiftType,
  reqList,
});

describe('ReqMounts plan', () => {
  it('a restarted container gets the mounts it had, and binfmt_misc, with nothing to create', () => {
    const rec = aRecord({ id: 'c1', state: 'restarted', containerMounts: [DOCKER_MOUNT] });
    expect(reqMountsPlan(rec, req([{ kind: 'docker', dest: '/elsewhere' }]), config)).toEqual({
      kind: 'answer',
      mounts: [DOCKER_MOUNT, BINFMT_MISC_MOUNT],
    });
  });

  it('records every kind before creating, each create owned as the shift type says and with no time limit', () => {
    const rec = aRecord({ id: 'c1', volumeKinds: ['kubelet'] });
    const plan = reqMountsPlan(
      rec,
      req([
        { kind: 'docker', dest: '/var/lib/docker' },
        { kind: 'kubelet', dest: '/var/lib/kubelet' },
      ]),
      config,
    );
    if (plan.kind !== 'create') throw new Error('expected creates');
    expect(plan.intent.volumeKinds).toEqual(['kubelet', 'docker']);
    expect(rec.volumeKinds).toEqual(['kubelet']);
    expect(plan.creates.map((c) => c.request)).toEqual([
      expect.objectContaining({
        mountpoint: '/var/lib/docker',
        uid: 165536,
        gid: 165536,
        chownOnSync: true,
        timeLimit: 'unbounded',
      }),
      expect.objectContaining({ mountpoint: '/var/lib/kubelet', timeLimit: 'unbounded' }),
    ]);
    // kubelet was recorded by an unanswered ReqMounts (no mount on record): its already-exists may be adopted.
    expect(plan.creates.map((c) => c.adoptable)).toEqual([false, true]);
  });

  it('ID-mapped volumes belong to root and are not chowned on sync', () => {
    const plan = reqMountsPlan(
      aRecord({ id: 'c1' }),
      req([{ kind: 'docker', dest: '/d' }], ShiftType.IDMappedMount),
      config,
    );
    expect(plan.kind === 'create' && plan.creates[0]!.request).toMatchObject({
      uid: 0,
      gid: 0,
      chownOnSync: false,
    });
  });

  it('a kind already mounted is not adoptable', () => {
    const rec = aRecord({ id: 'c1', volumeKinds: ['docker'], containerMounts: [DOCKER_MOUNT] });
    const plan = reqMountsPlan(rec, req([{ kind: 'docker', dest: '/var/lib/docker' }]), config);
    expect(plan.kind === 'create' && plan.creates[0]!.adoptable).toBe(false);
  });

  it('a second request of a kind fails at its turn, after the first is made', () => {
    const plan = reqMountsPlan(
      aRecord({ id: 'c1' }),
      req([
        { kind: 'docker', dest: '/a' },
        { kind: 'docker', dest: '/b' },
      ]),
      config,
    );
    if (plan.kind !== 'create') throw new Error('expected creates');
    expect(plan.creates[0]!.duplicate).toBeUndefined();
    expect(plan.creates[1]!.duplicate).toMatchObject({
      code: 'already-exists',
      message: 'container c1: a docker volume was already requested (for /b too)',
    });
    expect(plan.intent.volumeKinds).toEqual(['docker']);
  });

  it('refuses a shift type with no ownership rule, and one without a mapping, before any intent', () => {
    expect(() =>
      reqMountsPlan(aRecord({ id: 'c1' }), req([], ShiftType.IDMappedMountOrShiftfs), config),
    ).toThrow(expect.objectContaining({ code: 'invalid-request' }));
    expect(() =>
      reqMountsPlan(aRecord({ id: 'c1', uidMappings: [] }), req([{ kind: 'docker', dest: '/d' }]), config),
    ).toThrow(expect.objectContaining({ code: 'failed-precondition' }));
  });

  it('the record after: the mounts made, then kernel headers and modules; the answer adds binfmt_misc only where namespaced', () => {
    const rec = mountsAfter(aRecord({ id: 'c1' }), [DOCKER_MOUNT], {
      linuxHeaderMounts: [HEADERS],
      libModMounts: [],
    });
    expect(rec.containerMounts).toEqual([DOCKER_MOUNT, HEADERS]);
    expect(mountsAnswer(rec, { mountBinfmtMisc: false })).toEqual([DOCKER_MOUNT, HEADERS]);
    expect(mountsAnswer(rec, { mountBinfmtMisc: true })).toEqual([DOCKER_MOUNT, HEADERS, BINFMT_MISC_MOUNT]);
  });
});

describe('PrepMounts plan', () => {
  const prep = (prepList: { source: string; exclusive: boolean }[]) => ({
    id: 'c1',
    uid: 7,
    gid: 8,
    prepList,
  });
  const list = [
    { source: '/a', exclusive: false },
    { source: '/b', exclusive: true },
  ];

  it('asks vol-mgr to chown the sources that cannot be ID-mapped, recording the prep first', () => {
    const plan = prepPlan(aRecord({ id: 'c1' }), prep(list), [true, false], {
      overlayfsOnIDMapMountOk: true,
    });
    expect(plan?.intent.mountsPrepped).toBe(true);
    expect(plan?.prep.payload).toEqual({ id: 'c1', uid: 7, gid: 8, sources: [list[1]] });
  });

  it('ID-mapping counts only where overlayfs on ID-mapped mounts works; nothing to prepare, no plan', () => {
    expect(
      prepPlan(aRecord({ id: 'c1' }), prep(list), [true, true], { overlayfsOnIDMapMountOk: false })?.prep
        .payload,
    ).toMatchObject({
      sources: list,
    });
    expect(
      prepPlan(aRecord({ id: 'c1' }), prep(list), [true, true], { overlayfsOnIDMapMountOk: true }),
    ).toBeUndefined();
    expect(prepPlan(aRecord({ id: 'c1' }), prep([]), [], { overlayfsOnIDMapMountOk: false })).toBeUndefined();
  });

  it('a prep already recorded is not written again', () => {
    const rec = aRecord({ id: 'c1', mountsPrepped: true });
    expect(prepPlan(rec, prep(list), [], { overlayfsOnIDMapMountOk: false })?.intent).toBe(rec);
  });
});
