/** Register's and Update's decisions as plain functions. */
import { describe, expect, it } from 'vitest';
import { aRecord } from '../../test/records.js';
import { ShiftType } from '../record.js';
import { recordUpperChown, registerPlan, updatePlan } from './register.js';

const MAP = [{ containerId: 0, hostId: 100000, size: 65536 }];
const RANGE = [{ containerId: 0, hostId: 165536, size: 65536 }];
const request = (over: Partial<Parameters<typeof registerPlan>[0]> = {}) => ({
  id: 'c1',
  rootfs: '/var/lib/docker/overlay2/c1/merged',
  userns: '/proc/1/ns/user',
  netns: '/proc/1/ns/net',
  uidMappings: MAP,
  gidMappings: MAP,
  ...over,
});
const fresh = { rootfsOnOvfs: true, now: '2026-12-07T00:00:00.000Z', bootId: 'b1' };

describe('Register plan', () => {
  it('a new container: a started record of this boot, watched at the overlay2 dir, with the request’s namespaces and maps', () => {
    const { record, restart } = registerPlan(request(), { fresh });
    expect(restart).toBe(false);
    expect(record).toMatchObject({
      id: 'c1',
      state: 'started',
      boot: 'b1',
      rootfsOnOvfs: true,
      rmWatchPath: '/var/lib/docker/overlay2/c1',
      userns: '/proc/1/ns/user',
      netns: '/proc/1/ns/net',
      uidMappings: MAP,
      registeredAt: fresh.now,
    });
  });

  it('a stopped container restarts over the new rootfs, keeping its subid range over the request’s maps', () => {
    const existing = aRecord({
      id: 'c1',
      state: 'stopped',
      rootfs: '/old',
      rmWatchPath: '/old',
      subidAllocated: true,
      uidMappings: RANGE,
      gidMappings: RANGE,
    });
    const { record, restart } = registerPlan(request(), { existing });
    expect(restart).toBe(true);
    expect(record).toMatchObject({
      state: 'restarted',
      rootfs: request().rootfs,
      rmWatchPath: '/var/lib/docker/overlay2/c1',
      uidMappings: RANGE,
    });
    expect(existing.state).toBe('stopped');
  });

  it('a cloned rootfs stays the record’s rootfs on restart; maps without a range come from the request', () => {
    const existing = aRecord({
      id: 'c1',
      state: 'stopped',
      rootfs: '/clone',
      rootfsCloned: true,
      rmWatchPath: '/ovl/work',
    });
    const { record } = registerPlan(request(), { existing });
    expect(record).toMatchObject({ rootfs: '/clone', rmWatchPath: '/ovl/work', uidMappings: MAP });
  });

  it.each(['started', 'restarted'] as const)('a %s container is a redundant registration', (state) => {
    expect(() => registerPlan(request(), { existing: aRecord({ id: 'c1', state }) })).toThrow(
      expect.objectContaining({
        code: 'failed-precondition',
        message: 'redundant container registration for container c1',
      }),
    );
  });
});

describe('Update plan', () => {
  it('fills only what Register left empty, and always takes the shift type', () => {
    const rec = aRecord({ id: 'c1', userns: '/u', uidMappings: [], gidMappings: MAP });
    const { record } = updatePlan(rec, {
      id: 'c1',
      userns: '/other',
      netns: '',
      uidMappings: RANGE,
      gidMappings: RANGE,
      rootfsUidShiftType: ShiftType.Chown,
    });
    expect(record).toMatchObject({
      userns: '/u',
      uidMappings: RANGE,
      gidMappings: MAP,
      rootfsUidShiftType: ShiftType.Chown,
    });
    expect(rec.uidMappings).toEqual([]);
  });

  it('an ID-mapped rootfs on overlayfs whose upper-dir chown is not on record needs it recorded', () => {
    const up = (over: Parameters<typeof aRecord>[0], type: number) =>
      updatePlan(aRecord(over), {
        id: 'c1',
        userns: '',
        netns: '',
        uidMappings: [],
        gidMappings: [],
        rootfsUidShiftType: type,
      }).chownedUpper;
    expect(up({ id: 'c1', rootfsOnOvfs: true }, ShiftType.IDMappedMount)).toBe(true);
    expect(up({ id: 'c1', rootfsOnOvfs: true, rootfsOvfsUpperChowned: true }, ShiftType.IDMappedMount)).toBe(
      false,
    );
    expect(up({ id: 'c1', rootfsOnOvfs: false }, ShiftType.IDMappedMount)).toBe(false);
    expect(up({ id: 'c1', rootfsOnOvfs: true }, ShiftType.Chown)).toBe(false);
  });

  it('the upper-dir record: already shifted, by the first mapping, already-exists taken as done', () => {
    const call = recordUpperChown(aRecord({ id: 'c1' }), '/upper');
    expect(call).toMatchObject({
      onError: 'exists-ok',
      payload: { id: 'c1', upperDir: '/upper', uidOffset: 165536, alreadyShifted: true },
    });
    expect(call.apply!(aRecord({ id: 'c1' }), undefined)).toMatchObject({
      rootfsOvfsUpper: '/upper',
      rootfsOvfsUpperChowned: true,
    });
  });
});
