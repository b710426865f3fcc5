/** ReqCloneRootfs's and ReqShiftfsMark's decisions as plain functions. */
import { describe, expect, it } from 'vitest';
import { aRecord } from '../../test/records.js';
import { adoptClone, clonePlan, markPlan } from './clone.js';

const MARK = { source: '/lib/modules/6.8.0', readonly: true };

describe('ReqCloneRootfs plan', () => {
  it('a cloned container answers its rootfs without asking', () => {
    expect(clonePlan(aRecord({ id: 'c1', rootfs: '/clone', rootfsCloned: true }))).toEqual({
      kind: 'answer',
      rootfs: '/clone',
    });
  });

  it('writes the intent before asking; only an earlier intent makes an already-exists adoptable', () => {
    const rec = aRecord({ id: 'c1' });
    const plan = clonePlan(rec);
    if (plan.kind !== 'clone') throw new Error('expected a clone');
    expect(plan.intent.requested.clone).toBe(true);
    expect(rec.requested.clone).toBe(false);
    expect(plan.adoptable).toBe(false);
    expect(plan.create.payload).toEqual({ id: 'c1', origRootfs: rec.rootfs });
    const again = clonePlan(plan.intent);
    expect(again.kind === 'clone' && again.adoptable).toBe(true);
  });

  it('the clone becomes the rootfs, watched at the original overlay’s workdir, the intent cleared', () => {
    const rec = aRecord({ id: 'c1', requested: { clone: true, shiftfs: [] } });
    expect(adoptClone(rec, { rootfs: '/clone/merged', origWorkDir: '/ovl/x' })).toMatchObject({
      rootfs: '/clone/merged',
      rootfsCloned: true,
      rmWatchPath: '/ovl/x/work',
      requested: { clone: false },
    });
  });
});

describe('ReqShiftfsMark plan', () => {
  it('marks once: the marks asked for are the intent, the reply’s marks the record', () => {
    const plan = markPlan(aRecord({ id: 'c1' }), [MARK]);
    if (plan.kind !== 'mark') throw new Error('expected a mark');
    expect(plan.intent.requested.shiftfs).toEqual([MARK]);
    const after = plan.mark.apply!(plan.intent, { mounts: [{ ...MARK, readonly: false }] });
    expect(after).toMatchObject({ shiftfsMarks: [{ ...MARK, readonly: false }], requested: { shiftfs: [] } });
    expect(markPlan(after, [MARK])).toEqual({ kind: 'answer', marks: after.shiftfsMarks });
  });
});
