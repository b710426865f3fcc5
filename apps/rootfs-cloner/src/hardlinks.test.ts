/**
 * Why the clone mounts with index=on (README, "Mount options"): with metacopy=on alone, shifting a
 * hard-linked lower file copies up one name and breaks the link, so a shifter that visits each
 * inode once leaves the other names with the lower owner. With index=on every name stays shifted.
 */
import { link, lstat, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@sysbox-mgr-ts/exec';
import { afterEach, describe, expect, it } from 'vitest';
import { shiftOncePerInode, unmountAllUnder } from '../test/rootfs.js';

describe('hard-linked lower files under a metacopy overlay', () => {
  let base = '';
  afterEach(async () => {
    await unmountAllUnder(base);
    await rm(base, { recursive: true, force: true });
  });

  const shiftedNames = async (extra: string): Promise<{ uids: number[]; inodes: number }> => {
    base = await mkdtemp(join(tmpdir(), 'rfc-hl-'));
    for (const d of ['lower', 'upper', 'work', 'merged']) await mkdir(join(base, d));
    await writeFile(join(base, 'lower', 'a'), 'x');
    await link(join(base, 'lower', 'a'), join(base, 'lower', 'b'));
    await link(join(base, 'lower', 'a'), join(base, 'lower', 'c'));
    const opts = `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work,metacopy=on${extra}`;
    await run('mount', ['-t', 'overlay', 'overlay', '-o', opts, join(base, 'merged')], { timeout: 10_000 });
    await shiftOncePerInode(join(base, 'merged'), 100000, 100000);
    const st = await Promise.all(['a', 'b', 'c'].map((n) => lstat(join(base, 'merged', n))));
    return { uids: st.map((s) => s.uid), inodes: new Set(st.map((s) => s.ino)).size };
  };

  it('metacopy=on without index: the link breaks and names keep the lower owner', async () => {
    const r = await shiftedNames('');
    expect(r.uids.filter((u) => u === 0).length).toBeGreaterThan(0);
    expect(r.inodes).toBe(2);
  });

  it('metacopy=on,index=on (the clone options): one inode, every name shifted', async () => {
    const r = await shiftedNames(',index=on');
    expect(r).toEqual({ uids: [100000, 100000, 100000], inodes: 1 });
  });
});
