import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { createHostGuard, type HostGuard } from '@sysbox-mgr-ts/host-guard';
import { needsShift, shift, unfinishedIds } from '@sysbox-mgr-ts/id-shift';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMountPrep, prepKey, type IdShifter, type PrepRecord } from './prep.js';
import { createMemoryStore as memoryStore } from '@sysbox-mgr-ts/kv-state/testing';
import type { KvStateStore } from '@sysbox-mgr-ts/kv-state';

const log = silentLogger();
const OFFSET = 165536;
const isRoot = process.getuid?.() === 0;

/** Owner and mode of every entry under root, by relative path. */
async function ownersOf(root: string): Promise<Map<string, { uid: number; gid: number; mode: number }>> {
  const out = new Map<string, { uid: number; gid: number; mode: number }>();
  const walk = async (rel: string): Promise<void> => {
    const st = await lstat(join(root, rel));
    out.set(rel || '.', { uid: st.uid, gid: st.gid, mode: st.mode });
    if (st.isDirectory())
      for (const name of await readdir(join(root, rel))) await walk(rel ? `${rel}/${name}` : name);
  };
  await walk('');
  return out;
}

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
    guard = createHostGuard({
      dataRoot: join(base, 'data'),
      allowedRootfsRoots: [],
      subuidFile: join(base, 'subid'),
      subgidFile: join(base, 'subid'),
    });
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('undoes the shifts a failing prep already made (the failed walk only where it got to), and keeps no record of it', async () => {
    const calls: [string, number, number, boolean][] = [];
    let failWith: SysboxError = new SysboxError('internal', 'disk on fire');
    const shifter: IdShifter = {
      needsShift: async () => true,
      shift: async (root, u, g, opts) => {
        calls.push([root, u, g, opts?.only !== undefined]);
        if (root === b && u > 0) throw failWith;
        return { entries: 1, ms: 0 };
      },
    };
    const store = memoryStore<PrepRecord>();
    const prep = createMountPrep({ store, shifter, guard, log });
    const req = {
      id: 'c1',
      uid: OFFSET,
      gid: OFFSET + 65536,
      sources: [
        { source: a, exclusive: false },
        { source: b, exclusive: false },
      ],
    };
    await expect(prep.prep(req)).rejects.toMatchObject({ code: 'internal' });
    expect(calls).toEqual([
      [a, OFFSET, OFFSET + 65536, false],
      [b, OFFSET, OFFSET + 65536, false],
      [b, -OFFSET, -(OFFSET + 65536), true],
      // Every revert moves only the container's ids back (containerIds).
      [a, -OFFSET, -(OFFSET + 65536), true],
    ]);
    expect(await prep.list()).toEqual([]);

    // A refused shift changed nothing: nothing to move back there.
    calls.length = 0;
    failWith = new SysboxError('invalid-request', 'an id would overflow');
    await expect(prep.prep(req)).rejects.toMatchObject({ code: 'invalid-request' });
    expect(calls.map(([root, u]) => [root, u])).toEqual([
      [a, OFFSET],
      [b, OFFSET],
      [a, -OFFSET],
    ]);
    expect(await prep.list()).toEqual([]);
  });

  it('at start, finishes a shift or shift back left pending, and leaves one with a negative offset to an operator', async () => {
    const calls: [string, number, number, unknown][] = [];
    const shifter: IdShifter = {
      needsShift: async () => true,
      shift: async (root, u, g, opts) => (calls.push([root, u, g, opts?.only]), { entries: 1, ms: 0 }),
    };
    const store = memoryStore<PrepRecord>();
    const c = await mkdtemp(join(base, 'c-'));
    await store.create(prepKey(a), {
      id: 'c1',
      source: a,
      exclusive: false,
      uidOffset: OFFSET,
      gidOffset: OFFSET,
      holders: ['c1'],
      pending: 'shift',
    });
    await store.create(prepKey(b), {
      id: 'c2',
      source: b,
      exclusive: false,
      uidOffset: OFFSET,
      gidOffset: OFFSET,
      holders: [],
      pending: 'revert',
    });
    await store.create(prepKey(c), {
      id: 'c3',
      source: c,
      exclusive: false,
      uidOffset: -5,
      gidOffset: 0,
      holders: ['c3'],
      pending: 'shift',
    });
    const prep = createMountPrep({ store, shifter, guard, log });

    const report = await prep.reconcile();

    expect(report.finished).toEqual(
      expect.arrayContaining([
        { source: a, operation: 'shift' },
        { source: b, operation: 'revert' },
      ]),
    );
    expect(report.failed).toEqual([
      { source: c, reason: expect.stringContaining('cannot be finished safely') },
    ]);
    expect(calls).toEqual(
      expect.arrayContaining([
        [a, OFFSET, OFFSET, unfinishedIds(OFFSET, OFFSET)],
        [b, -OFFSET, -OFFSET, unfinishedIds(-OFFSET, -OFFSET)],
      ]),
    );
    expect(calls).toHaveLength(2);
    expect((await prep.list()).map((r) => [r.source, r.pending])).toEqual(
      expect.arrayContaining([
        [a, undefined],
        [c, 'shift'],
      ]),
    );
    expect(await prep.list()).toHaveLength(2);
    expect(await prep.count()).toBe(2);
  });

  it('is idempotent for a container that preps the same source twice', async () => {
    let shifts = 0;
    const shifter: IdShifter = {
      needsShift: async () => shifts === 0,
      shift: async () => ({ entries: ++shifts, ms: 0 }),
    };
    const prep = createMountPrep({ store: memoryStore<PrepRecord>(), shifter, guard, log });
    const req = { id: 'c1', uid: OFFSET, gid: OFFSET, sources: [{ source: a, exclusive: true }] };
    expect(await prep.prep(req)).toEqual({ prepared: [a], skipped: [] });
    // Answered as the first (a caller re-sends a prep whose answer a reconnect lost), shifted once.
    expect(await prep.prep(req)).toEqual({ prepared: [a], skipped: [] });
    expect(shifts).toBe(1);
    expect((await prep.list())[0]?.holders).toEqual(['c1']);
    expect(await prep.revertPrep('c1')).toEqual({ reverted: [a] });
    expect(shifts).toBe(2);
  });

  describe('hostile requests and records (nothing shifted, nothing recorded)', () => {
    const watching = () => {
      const calls: [string, number, number][] = [];
      const shifter: IdShifter = {
        needsShift: async () => true,
        shift: async (root, u, g) => (calls.push([root, u, g]), { entries: 1, ms: 0 }),
      };
      return { calls, shifter };
    };

    it.each([
      ['root ids', { uid: 0, gid: 0 }, /uid 0\.\./],
      ['a host user', { uid: 1000, gid: 1000 }, /uid 1000\.\./],
      [
        'a gid range straddling the end of the delegated one',
        { uid: OFFSET, gid: OFFSET + 15 * 65536 + 1 },
        /gid/,
      ],
    ])('refuses %s', async (_name, ids, message) => {
      const { calls, shifter } = watching();
      const prep = createMountPrep({ store: memoryStore<PrepRecord>(), shifter, guard, log });
      await expect(
        prep.prep({ id: 'h', ...ids, sources: [{ source: a, exclusive: false }] }),
      ).rejects.toMatchObject({
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
        await expect(
          prep.prep({
            id: 'h',
            uid: OFFSET,
            gid: OFFSET,
            sources: [
              { source: a, exclusive: false },
              { source, exclusive: false },
            ],
          }),
          source,
        ).rejects.toMatchObject({ code: 'invalid-request' });
      }
      expect(calls).toEqual([]);
      expect(await prep.list()).toEqual([]);
    });

    it('does not shift back a forged record whose source is a system dir', async () => {
      const { calls, shifter } = watching();
      const store = memoryStore<PrepRecord>();
      await store.create(prepKey('/etc'), {
        id: 'h',
        source: '/etc',
        exclusive: false,
        uidOffset: -OFFSET,
        gidOffset: -OFFSET,
        holders: ['h'],
      });
      const prep = createMountPrep({ store, shifter, guard, log });
      await expect(prep.revertPrep('h')).rejects.toMatchObject({
        code: 'invalid-request',
        message: expect.stringContaining('/etc'),
      });
      expect(calls).toEqual([]);
    });
  });
});

describe.skipIf(!isRoot)('mount prep cut short by a kill (real trees)', () => {
  let base: string;
  let guard: HostGuard;
  const realShifter: IdShifter = { shift, needsShift };
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'volmgr-prep-kill-'));
    await writeFile(join(base, 'subid'), `sysbox:${OFFSET}:${16 * 65536}\n`);
    guard = createHostGuard({
      dataRoot: join(base, 'data'),
      allowedRootfsRoots: [],
      subuidFile: join(base, 'subid'),
      subgidFile: join(base, 'subid'),
    });
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  /** A host dir owned by a user (1000), with root-owned and setuid entries in two subdirs. */
  const hostDir = async (): Promise<string> => {
    const src = await mkdtemp(join(base, 'src-'));
    for (const sub of ['one', 'two']) {
      await mkdir(join(src, sub));
      for (const f of ['a', 'b', 'c']) await writeFile(join(src, sub, f), f);
      await chown(join(src, sub, 'b'), 0, 0);
      await chown(join(src, sub, 'c'), 1000, 1000);
      await chmod(join(src, sub, 'c'), 0o4755);
      await chown(join(src, sub), 1000, 1000);
      await chown(join(src, sub, 'a'), 1000, 1000);
    }
    await chown(src, 1000, 1000);
    return src;
  };

  /** What prep leaves when killed mid-walk: its record saying a shift of `src` is under way. */
  const recordPendingShift = (store: KvStateStore<PrepRecord>, src: string, offset: number) =>
    store.create(prepKey(src), {
      id: 'c1',
      source: src,
      exclusive: false,
      uidOffset: offset,
      gidOffset: offset,
      holders: ['c1'],
      pending: 'shift',
    });

  const expectShiftedBy = async (
    src: string,
    before: Map<string, { uid: number; gid: number; mode: number }>,
    offset: number,
  ) => {
    const now = await ownersOf(src);
    expect(now.size).toBe(before.size);
    for (const [path, st] of before)
      expect([path, now.get(path)]).toEqual([path, { ...st, uid: st.uid + offset, gid: st.gid + offset }]);
  };

  it('a prep and a revert-prep cut short are finished at start: exactly original + offset, then exactly the original', async () => {
    const src = await hostDir();
    const before = await ownersOf(src);
    const offset = OFFSET - 1000;
    const store = memoryStore<PrepRecord>();
    // Killed mid-walk: the record says a shift is under way, one subdir shifted.
    await recordPendingShift(store, src, offset);
    await shift(join(src, 'one'), offset, offset);

    const afterKill = createMountPrep({ store, shifter: realShifter, guard, log });
    expect(await afterKill.reconcile()).toEqual({
      finished: [{ source: src, operation: 'shift' }],
      failed: [],
    });
    await expectShiftedBy(src, before, offset);
    expect((await afterKill.list())[0]).toMatchObject({ holders: ['c1'] });
    expect((await afterKill.list())[0]?.pending).toBeUndefined();
    expect(await afterKill.reconcile()).toEqual({ finished: [], failed: [] });
    await expectShiftedBy(src, before, offset);

    // revert-prep killed mid-walk: the last holder gone, the record kept saying a shift back is under way.
    await store.mutate(prepKey(src), (cur) => cur && { ...cur, holders: [], pending: 'revert' });
    await shift(join(src, 'two'), -offset, -offset);
    expect(await createMountPrep({ store, shifter: realShifter, guard, log }).reconcile()).toEqual({
      finished: [{ source: src, operation: 'revert' }],
      failed: [],
    });
    expect(await ownersOf(src)).toEqual(before);
    expect(await store.list()).toEqual([]);
  });

  it('a retried prep finishes the shift left pending; revert-prep of a prep cut short moves back only what moved', async () => {
    const src = await hostDir();
    const before = await ownersOf(src);
    const offset = OFFSET - 1000;
    const store = memoryStore<PrepRecord>();
    const prep = createMountPrep({ store, shifter: realShifter, guard, log });
    await recordPendingShift(store, src, offset);
    await shift(join(src, 'two'), offset, offset);

    // Answered as the prep that was cut short would have been.
    expect(
      await prep.prep({ id: 'c1', uid: OFFSET, gid: OFFSET, sources: [{ source: src, exclusive: false }] }),
    ).toEqual({ prepared: [src], skipped: [] });
    await expectShiftedBy(src, before, offset);

    await store.mutate(prepKey(src), (cur) => cur && { ...cur, pending: 'shift' });
    await shift(join(src, 'one'), -offset, -offset);
    expect(await prep.revertPrep('c1')).toEqual({ reverted: [src] });
    expect(await ownersOf(src)).toEqual(before);
    expect(await store.list()).toEqual([]);

    // And the plain path still records, shifts, clears the marker, and shifts back.
    expect(
      await prep.prep({ id: 'c2', uid: OFFSET, gid: OFFSET, sources: [{ source: src, exclusive: false }] }),
    ).toEqual({ prepared: [src], skipped: [] });
    await expectShiftedBy(src, before, offset);
    expect((await store.list())[0]?.value.pending).toBeUndefined();
    expect(await prep.revertPrep('c2')).toEqual({ reverted: [src] });
    expect(await ownersOf(src)).toEqual(before);
  });
});
