import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMountPrep, type IdShifter, type PrepRecord } from './prep.js';
import { memoryStore } from './testing/memory-store.js';

const log = silentLogger();

describe('mount prep bookkeeping (fake shifter)', () => {
  let base: string;
  let a: string;
  let b: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'volmgr-prep-'));
    a = await mkdtemp(join(base, 'a-'));
    b = await mkdtemp(join(base, 'b-'));
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('undoes the shifts a failing prep already made, and keeps no record of it', async () => {
    const calls: [string, number, number][] = [];
    const shifter: IdShifter = {
      needsShift: async () => true,
      shift: async (root, u, g) => {
        calls.push([root, u, g]);
        if (root === b) throw new SysboxError('internal', 'disk on fire');
        return { entries: 1, ms: 0 };
      },
    };
    const store = memoryStore<PrepRecord>();
    const prep = createMountPrep({ store, shifter, dataRoot: join(base, 'data'), log });
    const req = { id: 'c1', uid: 1000, gid: 2000, sources: [{ source: a, exclusive: false }, { source: b, exclusive: false }] };
    await expect(prep.prep(req)).rejects.toMatchObject({ code: 'internal' });
    expect(calls).toEqual([
      [a, 1000, 2000],
      [b, 1000, 2000],
      [a, -1000, -2000],
    ]);
    expect(await prep.list()).toEqual([]);
  });

  it('is idempotent for a container that preps the same source twice', async () => {
    let shifts = 0;
    const shifter: IdShifter = { needsShift: async () => shifts === 0, shift: async () => ({ entries: ++shifts, ms: 0 }) };
    const prep = createMountPrep({ store: memoryStore<PrepRecord>(), shifter, dataRoot: join(base, 'data'), log });
    const req = { id: 'c1', uid: 1000, gid: 1000, sources: [{ source: a, exclusive: true }] };
    expect(await prep.prep(req)).toEqual({ prepared: [a], skipped: [] });
    expect(await prep.prep(req)).toEqual({ prepared: [], skipped: [a] });
    expect((await prep.list())[0]?.holders).toEqual(['c1']);
    expect(await prep.revertPrep('c1')).toEqual({ reverted: [a] });
    expect(shifts).toBe(2);
  });
});
