/** Unregister's, Pause's and Resume's decisions as plain functions. */
import { describe, expect, it } from 'vitest';
import { aRecord } from '../../test/records.js';
import { ShiftType } from '../record.js';
import { afterStop, pauseCalls, resumeCalls, stoppedRecord, unregisterPlan } from './stop.js';

const MARK = { source: '/lib/modules/6.8.0', readonly: true };
const ops = (calls: { contract: { service: string; endpoint: string } }[]) =>
  calls.map((c) => `${c.contract.service}.${c.contract.endpoint}`);

describe('Unregister plan', () => {
  it('a stopped container is a redundant unregistration', () => {
    expect(() => unregisterPlan(aRecord({ id: 'c1', state: 'stopped' }))).toThrow(
      expect.objectContaining({ code: 'failed-precondition' }),
    );
  });

  it('unmarks confirmed and asked-for marks, may fail, and clears both on success', () => {
    const rec = aRecord({ id: 'c1', shiftfsMarks: [MARK], requested: { clone: false, shiftfs: [MARK] } });
    const { unmark } = unregisterPlan(rec);
    expect(unmark).toMatchObject({ onError: 'warn', payload: { id: 'c1', mounts: [MARK, MARK] } });
    expect(unmark!.apply!(rec, {})).toMatchObject({ shiftfsMarks: [], requested: { shiftfs: [] } });
    expect(unregisterPlan(aRecord({ id: 'c1' })).unmark).toBeUndefined();
  });

  it('reverts the upper-dir chown (must succeed) unless the runtime removes the container, then the prep (may fail)', () => {
    const rec = aRecord({ id: 'c1', rootfsOvfsUpperChowned: true, mountsPrepped: true, netnsInode: 7 });
    const plan = unregisterPlan(rec);
    expect(ops(plan.undo)).toEqual(['rootfs.revert-upper', 'vol.revert-prep']);
    expect(plan.undo.map((c) => c.onError ?? 'throw')).toEqual(['throw', 'warn']);
    expect(plan.untrackNetns).toBe(7);
    expect(ops(unregisterPlan({ ...rec, autoRemove: true }).undo)).toEqual(['vol.revert-prep']);
  });

  it('looks a clone up only when it was asked for and its reply lost', () => {
    expect(unregisterPlan(aRecord({ id: 'c1', requested: { clone: true, shiftfs: [] } })).lookupClone).toBe(
      true,
    );
    expect(
      unregisterPlan(aRecord({ id: 'c1', rootfsCloned: true, requested: { clone: true, shiftfs: [] } }))
        .lookupClone,
    ).toBe(false);
  });

  it('the stopped record leaves its namespaces and keeps id maps only with a subid range', () => {
    const rec = aRecord({ id: 'c1', userns: '/u', netns: '/n', netnsInode: 7 });
    expect(stoppedRecord(rec)).toMatchObject({
      state: 'stopped',
      userns: '',
      netns: '',
      netnsInode: 0,
      uidMappings: [],
      gidMappings: [],
    });
    expect(stoppedRecord({ ...rec, subidAllocated: true }).uidMappings).toEqual(rec.uidMappings);
  });

  it('after the write: sync-out unless auto-removed; rootfs-cloner told only of a clone', () => {
    expect(afterStop(aRecord({ id: 'c1' }))).toEqual({ syncOut: true });
    const after = afterStop(aRecord({ id: 'c1', autoRemove: true, rootfsCloned: true }));
    expect(after.syncOut).toBe(false);
    expect(ops([after.notice!])).toEqual(['rootfs.container-stopped']);
  });
});

describe('Pause and Resume plans', () => {
  it('Pause gives the upper dir its owner back (recorded), or reverts a chowned clone (nothing to record)', () => {
    const upper = pauseCalls(
      aRecord({
        id: 'c1',
        rootfsOvfsUpperChowned: true,
        rootfsCloned: true,
        rootfsUidShiftType: ShiftType.Chown,
      }),
    );
    expect(ops(upper)).toEqual(['rootfs.revert-upper']);
    expect(
      upper[0]!.apply!(aRecord({ id: 'c1', rootfsOvfsUpperChowned: true }), {}).rootfsOvfsUpperChowned,
    ).toBe(false);
    const clone = pauseCalls(aRecord({ id: 'c1', rootfsCloned: true, rootfsUidShiftType: ShiftType.Chown }));
    expect(ops(clone)).toEqual(['rootfs.revert-chown']);
    expect(clone[0]!.apply).toBeUndefined();
    expect(pauseCalls(aRecord({ id: 'c1' }))).toEqual([]);
  });

  it('Resume shifts a known upper dir again, or chowns the clone, by the first mapping', () => {
    const upper = resumeCalls(
      aRecord({
        id: 'c1',
        rootfsUidShiftType: ShiftType.IDMappedMount,
        rootfsOnOvfs: true,
        rootfsOvfsUpper: '/up',
      }),
    );
    expect(upper).toMatchObject([{ payload: { upperDir: '/up', uidOffset: 165536 } }]);
    expect(
      ops(resumeCalls(aRecord({ id: 'c1', rootfsCloned: true, rootfsUidShiftType: ShiftType.Chown }))),
    ).toEqual(['rootfs.chown-clone']);
    expect(resumeCalls(aRecord({ id: 'c1', rootfsUidShiftType: ShiftType.IDMappedMount }))).toEqual([]);
  });
});
