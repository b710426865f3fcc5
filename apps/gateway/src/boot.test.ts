/** The gateway's start-up decision for a record of another boot (issue #25), as a plain function. */
import { describe, expect, it } from 'vitest';
import { bootDecision } from './boot.js';
import { aRecord } from '../test/records.js';

const BOOT_1 = '11111111-1111-4111-8111-111111111111';
const BOOT_2 = '22222222-2222-4222-8222-222222222222';
const MARK = { source: '/lib/modules/6.8.0', readonly: true };

describe('bootDecision', () => {
  it('leaves a record of this boot alone', () => {
    expect(bootDecision(aRecord({ id: 'c1', boot: BOOT_2 }), BOOT_2)).toEqual({ kind: 'this-boot' });
  });

  it('stamps an unstamped record with this boot and changes nothing else', () => {
    const rec = aRecord({ id: 'c1', rootfsCloned: true, shiftfsMarks: [MARK] });
    expect(bootDecision(rec, BOOT_2)).toEqual({ kind: 'stamp', record: { ...rec, boot: BOOT_2 } });
  });

  it.each([
    {
      state: 'started' as const,
      upper: true,
      prep: true,
      autoRemove: false,
      revertUpper: true,
      revertPrep: true,
      netns: 4026532001,
    },
    {
      state: 'restarted' as const,
      upper: true,
      prep: false,
      autoRemove: true,
      revertUpper: false,
      revertPrep: false,
      netns: 4026532001,
    },
    // Unregister already undid what it could: nothing is asked again.
    {
      state: 'stopped' as const,
      upper: false,
      prep: true,
      autoRemove: false,
      revertUpper: false,
      revertPrep: false,
      netns: 0,
    },
  ])(
    'a $state container of an earlier boot: stopped, no mount claimed; revert upper $revertUpper, prep $revertPrep',
    ({ state, upper, prep, autoRemove, revertUpper, revertPrep, netns }) => {
      const rec = aRecord({
        id: 'c1',
        boot: BOOT_1,
        state,
        subidAllocated: true,
        rootfs: '/var/lib/sysbox/rootfs/c1/overlay2/merged',
        rootfsCloned: true,
        rmWatchPath: '/var/lib/docker/overlay2/c1/work/work',
        shiftfsMarks: [MARK],
        requested: { clone: false, shiftfs: [MARK] },
        rootfsOvfsUpperChowned: upper,
        mountsPrepped: prep,
        autoRemove,
        netns: state === 'stopped' ? '' : '/proc/1/ns/net',
        netnsInode: state === 'stopped' ? 0 : 4026532001,
        volumeKinds: ['docker'],
      });
      const d = bootDecision(rec, BOOT_2);
      expect(d.kind).toBe('earlier-boot');
      if (d.kind !== 'earlier-boot') return;
      expect(d.plan).toMatchObject({ revertUpper, revertPrep, untrackNetns: netns });
      expect(d.plan.record).toEqual({
        ...rec,
        boot: BOOT_2,
        state: 'stopped',
        // The clone is gone with its mounts; its intent stays so a removal or a restart deals with it.
        rootfsCloned: false,
        requested: { clone: true, shiftfs: [] },
        shiftfsMarks: [],
        rootfsOvfsUpperChowned: revertUpper ? false : upper,
        mountsPrepped: revertPrep ? false : prep,
        userns: '',
        netns: '',
        netnsInode: 0,
        // Kept: the range (its volume's files are owned by it), the volume.
        uidMappings: rec.uidMappings,
        gidMappings: rec.gidMappings,
        volumeKinds: ['docker'],
        // Watched at the runtime's work dir, which a mount of its overlay leaves in place (the
        // overlay's work/work inside it is deleted and made again by every mount).
        rmWatchPath: '/var/lib/docker/overlay2/c1/work',
      });
    },
  );

  it('a container that had no clone keeps its watch path', () => {
    const rec = aRecord({ id: 'c1', boot: BOOT_1, rmWatchPath: '/var/lib/docker/overlay2/c1' });
    const d = bootDecision(rec, BOOT_2);
    expect(d.kind === 'earlier-boot' && d.plan.record.rmWatchPath).toBe('/var/lib/docker/overlay2/c1');
  });

  it('a container that ran without a range on record forgets the mappings the runtime gave it', () => {
    const d = bootDecision(aRecord({ id: 'c1', boot: BOOT_1, subidAllocated: false }), BOOT_2);
    expect(d.kind === 'earlier-boot' && d.plan.record).toMatchObject({ uidMappings: [], gidMappings: [] });
  });
});
