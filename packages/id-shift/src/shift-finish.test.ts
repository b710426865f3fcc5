import { chmodSync, lchownSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { shift, unfinishedIds } from './index.js';
import { buildTree, snapshotOwners, type EntryState } from '../test/tree.js';
import { MAX_ID, canAcl, getfacl, isRoot, owner, useScratch } from '../test/scratch.js';

const { freshDir } = useScratch();

describe.skipIf(!isRoot)('finishing a shift cut short (only: unfinishedIds)', () => {
  const O = 165536;

  function expectShiftedBy(before: Map<string, EntryState>, root: string, offset: number): void {
    const now = snapshotOwners(root);
    expect(now.size).toBe(before.size);
    for (const [path, st] of before)
      expect(now.get(path), path).toEqual({ ...st, uid: st.uid + offset, gid: st.gid + offset });
  }

  /** A tree with hard links, setuid/setgid files and (where setfacl exists) access and default ACLs. */
  async function aclTree(): Promise<{ root: string; aclFile: string; aclDir: string }> {
    const root = freshDir();
    buildTree(root, {
      top: 3,
      sub: 4,
      perDir: 30,
      owners: [0, 33, 1000, 65534],
      outside: '/etc/hostname',
      seed: 7,
    });
    const aclFile = join(root, 'd2', 's1', 'f0');
    const aclDir = join(root, 'd2', 's3');
    if (canAcl) {
      await run('setfacl', ['-m', 'u:1234:rw,g:55:r', aclFile], { timeout: 10_000 });
      await run('setfacl', ['-d', '-m', 'u:777:rwx,g:88:rx', aclDir], { timeout: 10_000 });
    }
    return { root, aclFile, aclDir };
  }

  async function expectAcls(aclFile: string, aclDir: string, offset: number): Promise<void> {
    if (!canAcl) return;
    const file = await getfacl(aclFile);
    expect(file).toContain(`user:${1234 + offset}:rw-`);
    expect(file).toContain(`group:${55 + offset}:r--`);
    const dir = await getfacl(aclDir);
    expect(dir).toContain(`default:user:${777 + offset}:rwx`);
    expect(dir).toContain(`default:group:${88 + offset}:r-x`);
  }

  it('finishes a forward shift: every entry ends at exactly original + offset, and finishing again changes nothing', async () => {
    const { root, aclFile, aclDir } = await aclTree();
    const before = snapshotOwners(root);
    // A walk cut short: one subtree done, and one file whose chown landed but whose ACL write did not.
    await shift(join(root, 'd0'), O, O);
    const st = before.get(aclFile)!;
    lchownSync(aclFile, st.uid + O, st.gid + O);
    chmodSync(aclFile, st.mode & 0o7777);

    const r = await shift(root, O, O, { only: unfinishedIds(O, O) });

    expect(r.entries).toBeGreaterThan(0);
    expect(r.entries).toBeLessThan(before.size);
    expectShiftedBy(before, root, O);
    await expectAcls(aclFile, aclDir, O);
    expect(await shift(root, O, O, { only: unfinishedIds(O, O) })).toMatchObject({ entries: 0 });
    expectShiftedBy(before, root, O);
    await expectAcls(aclFile, aclDir, O);
  });

  it('runs many shifts at once within the process budget of walker threads, each one complete', async () => {
    const roots = Array.from({ length: 2 * availableParallelism() + 2 }, (_, i) => {
      const root = freshDir();
      buildTree(root, {
        top: 2,
        sub: 4,
        perDir: 20,
        owners: [0, 1000],
        outside: '/etc/hostname',
        seed: 10 + i,
      });
      return root;
    });
    const before = roots.map((r) => snapshotOwners(r));
    await Promise.all(roots.map((r) => shift(r, O, O, { workers: 4 })));
    roots.forEach((r, i) => expectShiftedBy(before[i]!, r, O));
  });

  it('a short shift does not wait behind long ones that hold every walker thread', async () => {
    const big = Array.from({ length: availableParallelism() }, (_, i) => {
      const root = freshDir();
      buildTree(root, { top: 10, sub: 20, perDir: 40, owners: [0], outside: '/etc/hostname', seed: 20 + i });
      return root;
    });
    const bigBefore = big.map((r) => snapshotOwners(r));
    const small = freshDir();
    buildTree(small, { top: 1, sub: 2, perDir: 5, owners: [0], outside: '/etc/hostname', seed: 5 });
    const smallBefore = snapshotOwners(small);
    // Idle walker threads for every walk below, so none of them pays a thread start (tens of ms).
    const warm = [freshDir(), freshDir()];
    for (const r of warm)
      buildTree(r, { top: 1, sub: 1, perDir: 1, owners: [0], outside: '/etc/hostname', seed: 6 });
    await Promise.all([
      shift(warm[0]!, O, O, { workers: big.length }),
      shift(warm[1]!, O, O, { workers: 1 }),
    ]);
    const finished: string[] = [];
    let applying!: () => void;
    const bigsApplying = new Promise<void>((r) => (applying = r));
    let progressed = 0;
    const busy = big.map((r, i) =>
      shift(r, O, O, { workers: 1, onProgress: () => ++progressed === big.length && applying() }).then(() =>
        finished.push(`big${i}`),
      ),
    );
    // Every thread is busy with a long walk now; queued behind them (first come, first served,
    // as the budget used to be) the short one would finish after one of them.
    await bigsApplying;
    await shift(small, O, O).then(() => finished.push('small'));
    await Promise.all(busy);
    expect(finished[0]).toBe('small');
    expectShiftedBy(smallBefore, small, O);
    big.forEach((r, i) => expectShiftedBy(bigBefore[i]!, r, O));
  });

  it('finishes a shift cancelled part way through its apply phase', async () => {
    const root = freshDir();
    // Large enough that the walker is still applying when the abort reaches it (it acts on the first batch of 512).
    buildTree(root, {
      top: 10,
      sub: 20,
      perDir: 40,
      owners: [0, 1000, 65534],
      outside: '/etc/hostname',
      seed: 3,
    });
    const before = snapshotOwners(root);
    const ac = new AbortController();
    const cut = await shift(root, O, O, {
      workers: 1,
      signal: ac.signal,
      onProgress: () => ac.abort(),
    }).catch((e: unknown) => e);
    expect(cut).toMatchObject({ code: 'timeout', message: expect.stringContaining('partly shifted') });
    const halfway = [...snapshotOwners(root).values()];
    expect(halfway.some((e) => e.uid >= O)).toBe(true);
    expect(halfway.some((e) => e.uid < O)).toBe(true);

    await shift(root, O, O, { only: unfinishedIds(O, O) });
    expectShiftedBy(before, root, O);
  });

  it('finishes a revert: back to exactly the original owners, ACLs and modes, and again is a no-op', async () => {
    const { root, aclFile, aclDir } = await aclTree();
    const before = snapshotOwners(root);
    await shift(root, O, O);
    // The revert reached d1 and d2 (the ACL entries among them) before it was cut short.
    await shift(join(root, 'd1'), -O, -O);
    await shift(join(root, 'd2'), -O, -O);

    await shift(root, -O, -O, { only: unfinishedIds(-O, -O) });

    expect(snapshotOwners(root)).toEqual(before);
    await expectAcls(aclFile, aclDir, 0);
    expect(await shift(root, -O, -O, { only: unfinishedIds(-O, -O) })).toMatchObject({ entries: 0 });
    expect(snapshotOwners(root)).toEqual(before);
  });

  it('moves uids and gids independently and checks only the ids that move for overflow', async () => {
    const root = freshDir();
    writeFileSync(join(root, 'far'), '');
    lchownSync(join(root, 'far'), MAX_ID - 5, 7);
    writeFileSync(join(root, 'near'), '');
    lchownSync(join(root, 'near'), 5, O + 7);

    await shift(root, 10, O, { only: { uid: [0, 100], gid: [0, O] } });

    expect(owner(join(root, 'far'))).toBe(`${MAX_ID - 5}:${O + 7}`);
    expect(owner(join(root, 'near'))).toBe(`15:${O + 7}`);
    expect(owner(root)).toBe(`10:${O}`);
    await expect(shift(root, 10, 0, { only: { uid: [0, 2 ** 32], gid: [0, 0] } })).rejects.toMatchObject({
      code: 'invalid-request',
    });
    await expect(shift(root, 1, 1, { only: { uid: [5, 1], gid: [0, 0] } })).rejects.toMatchObject({
      code: 'invalid-request',
    });
  });

  it('unfinishedIds: the source range of a shift by +d is [0, d), of a revert by -d it is [d, 2d)', () => {
    expect(unfinishedIds(O, 0)).toEqual({ uid: [0, O], gid: [0, 0] });
    expect(unfinishedIds(-O, -(2 ** 31) - 1)).toEqual({ uid: [O, 2 * O], gid: [2 ** 31 + 1, 2 ** 32] });
  });
});
