import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { createHostGuard, type HostGuard } from '@sysbox-mgr-ts/host-guard';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMountPrep, prepKey, type IdShifter, type PrepRecord } from './prep.js';
import { memoryStore } from './testing/memory-store.js';

const log = silentLogger();
const OFFSET = 165536;

describe('mount prep bookkeeping (fake shifter)', () => {
  let base: string;
  let a: string;
  let b: string;
  let guard: HostGuard;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'volmgr-prep-'));
    a = await mkdtemp(join(base, 'a-'));
    b = await mkdtemp(join(base, 'b-'));
    await writeFile(join(base, 'subid'), `sysbox:${OFFSET}:${16 * 65536}\n`);
    guard = createHostGuard({ dataRoot: join(base, 'data'), allowedRootfsRoots: [], subuidFile: join(base, 'subid'), subgidFile: join(base, 'subid') });
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
    const prep = createMountPrep({ store, shifter, guard, log });
    const req = { id: 'c1', uid: OFFSET, gid: OFFSET + 65536, sources: [{ source: a, exclusive: false }, { source: b, exclusive: false }] };
    await expect(prep.prep(req)).rejects.toMatchObject({ code: 'internal' });
    expect(calls).toEqual([
      [a, OFFSET, OFFSET + 65536],
      [b, OFFSET, OFFSET + 65536],
      [a, -OFFSET, -(OFFSET + 65536)],
    ]);
    expect(await prep.list()).toEqual([]);
  });

  it('is idempotent for a container that preps the same source twice', async () => {
    let shifts = 0;
    const shifter: IdShifter = { needsShift: async () => shifts === 0, shift: async () => ({ entries: ++shifts, ms: 0 }) };
    const prep = createMountPrep({ store: memoryStore<PrepRecord>(), shifter, guard, log });
    const req = { id: 'c1', uid: OFFSET, gid: OFFSET, sources: [{ source: a, exclusive: true }] };
    expect(await prep.prep(req)).toEqual({ prepared: [a], skipped: [] });
    expect(await prep.prep(req)).toEqual({ prepared: [], skipped: [a] });
    expect((await prep.list())[0]?.holders).toEqual(['c1']);
    expect(await prep.revertPrep('c1')).toEqual({ reverted: [a] });
    expect(shifts).toBe(2);
  });

  describe('hostile requests and records (nothing shifted, nothing recorded)', () => {
    const watching = () => {
      const calls: [string, number, number][] = [];
      const shifter: IdShifter = { needsShift: async () => true, shift: async (root, u, g) => (calls.push([root, u, g]), { entries: 1, ms: 0 }) };
      return { calls, shifter };
    };

    it.each([
      ['root ids', { uid: 0, gid: 0 }, /uid 0\.\./],
      ['a host user', { uid: 1000, gid: 1000 }, /uid 1000\.\./],
      ['a gid range straddling the end of the delegated one', { uid: OFFSET, gid: OFFSET + 15 * 65536 + 1 }, /gid/],
    ])('refuses %s', async (_name, ids, message) => {
      const { calls, shifter } = watching();
      const prep = createMountPrep({ store: memoryStore<PrepRecord>(), shifter, guard, log });
      await expect(prep.prep({ id: 'h', ...ids, sources: [{ source: a, exclusive: false }] })).rejects.toMatchObject({
        code: 'invalid-request',
        message: expect.stringMatching(message),
      });
      expect(calls).toEqual([]);
      expect(await prep.list()).toEqual([]);
    });

    it('refuses system dirs as sources, also behind a symlink', async () => {
      const link = join(base, 'etc-link');
      await symlink('/etc', link);
      const { calls, shifter } = watching();
      const prep = createMountPrep({ store: memoryStore<PrepRecord>(), shifter, guard, log });
      for (const source of ['/etc', '/usr/lib', link, base]) {
        await expect(prep.prep({ id: 'h', uid: OFFSET, gid: OFFSET, sources: [{ source: a, exclusive: false }, { source, exclusive: false }] }), source).rejects.toMatchObject({ code: 'invalid-request' });
      }
      expect(calls).toEqual([]);
      expect(await prep.list()).toEqual([]);
    });

    it('does not shift back a forged record whose source is a system dir', async () => {
      const { calls, shifter } = watching();
      const store = memoryStore<PrepRecord>();
      await store.create(prepKey('/etc'), { id: 'h', source: '/etc', exclusive: false, uidOffset: -OFFSET, gidOffset: -OFFSET, holders: ['h'] });
      const prep = createMountPrep({ store, shifter, guard, log });
      await expect(prep.revertPrep('h')).rejects.toMatchObject({ code: 'invalid-request', message: expect.stringContaining('/etc') });
      expect(calls).toEqual([]);
    });
  });
});
