/** The executor: calls in order, each reply folded by its plan, failures as the plan says. */
import { describe, expect, it } from 'vitest';
import { SysboxError, rootfsRevertUpper, shiftfsUnmark, volRevertPrep } from '@sysbox-mgr-ts/contracts';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { fakeClient } from '../test/fake-client.js';
import { aRecord } from '../test/records.js';
import { createExecutor, planCall } from './executor.js';
import type { ContainerRecord, ContainerState } from './record.js';
import { createContainerTable } from './table.js';
import { createMemoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import { serviceCaller } from './service-call.js';

const fail = (code: 'internal' | 'already-exists') => () => {
  throw new SysboxError(code, 'no');
};

function exec(handlers: Parameters<typeof fakeClient>[0], stored: ContainerRecord[] = []) {
  const client = fakeClient(handlers);
  const store = createMemoryStore<ContainerRecord>({
    initial: Object.fromEntries(stored.map((r) => [r.id, r])),
  });
  const writes: string[] = [];
  const table = createContainerTable(store, () => new Date(0));
  const counted = {
    ...table,
    save: (r: ContainerRecord, s?: ContainerState) => (writes.push(r.id), table.save(r, s)),
  };
  return {
    client,
    store,
    writes,
    exec: createExecutor(serviceCaller(client, { opMs: 100, longOpMs: 100 }), counted, silentLogger()),
  };
}

describe('plan executor', () => {
  const rec = aRecord({ id: 'c1', mountsPrepped: true, rootfsOvfsUpperChowned: true });
  const unmark = planCall(
    'shiftfs unmark',
    shiftfsUnmark,
    { id: 'c1', mounts: [] },
    {
      onError: 'warn',
      apply: (r) => ({ ...r, shiftfsMarks: [] }),
    },
  );
  const revertPrep = planCall(
    'revert of mount preparation',
    volRevertPrep,
    { id: 'c1' },
    {
      apply: (r) => ({ ...r, mountsPrepped: false }),
    },
  );

  it('folds each reply into the record in order, skipping what the plan left out, without touching the input', async () => {
    const { client, exec: e } = exec({});
    const next = await e.run(rec, [unmark, false, undefined, revertPrep]);
    expect(client.ops()).toEqual(['shiftfs.unmark', 'vol.revert-prep']);
    expect(next.mountsPrepped).toBe(false);
    expect(rec.mountsPrepped).toBe(true);
  });

  it('a warn call that fails leaves the record as it was and the steps go on; a throw call ends the plan', async () => {
    const { client, exec: e } = exec({
      'shiftfs.unmark': fail('internal'),
      'vol.revert-prep': fail('internal'),
    });
    await expect(e.run(rec, [unmark, revertPrep, revertPrep])).rejects.toMatchObject({
      code: 'internal',
      message: 'container c1: revert of mount preparation: no',
    });
    expect(client.ops()).toEqual(['shiftfs.unmark', 'vol.revert-prep']);
  });

  it('exists-ok takes already-exists for done, and only that', async () => {
    const upper = planCall(
      'revert',
      rootfsRevertUpper,
      { id: 'c1' },
      {
        onError: 'exists-ok',
        apply: (r) => ({ ...r, rootfsOvfsUpperChowned: false }),
      },
    );
    const { exec: done } = exec({ 'rootfs.revert-upper': fail('already-exists') });
    expect((await done.run(rec, [upper])).rootfsOvfsUpperChowned).toBe(false);
    const { exec: broken } = exec({ 'rootfs.revert-upper': fail('internal') });
    await expect(broken.run(rec, [upper])).rejects.toMatchObject({ code: 'internal' });
  });

  it('a step saves once when its calls changed the record, not at all when none did, and always when told the plan did', async () => {
    const { exec: e, store, writes } = exec({}, [rec]);
    const next = await e.step(rec, [unmark, revertPrep]);
    expect(writes).toEqual(['c1']);
    expect(store.snapshot().get('c1')?.mountsPrepped).toBe(false);
    expect(await e.step(next, [planCall('revert', rootfsRevertUpper, { id: 'c1' })])).toBe(next);
    expect(writes).toHaveLength(1);
    await e.step({ ...next, userns: '/u' }, [], { changed: true });
    expect(writes).toHaveLength(2);
    expect(store.snapshot().get('c1')?.userns).toBe('/u');
  });
});
