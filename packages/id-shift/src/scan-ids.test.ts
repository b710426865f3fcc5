import { lchownSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { needsShift, scanIds } from './index.js';
import { isRoot, useScratch } from '../test/scratch.js';

const { freshDir } = useScratch();

describe.skipIf(!isRoot)('scanIds and needsShift', () => {
  it('lists the distinct uids and gids present, sorted, without crossing mounts', async () => {
    const root = freshDir();
    lchownSync(root, 5, 6);
    for (const [name, uid, gid] of [
      ['a', 1000, 100],
      ['b', 0, 100],
      ['c', 1000, 7],
    ] as const) {
      writeFileSync(join(root, name), '');
      lchownSync(join(root, name), uid, gid);
    }
    expect(await scanIds(root)).toEqual({ uids: [0, 5, 1000], gids: [6, 7, 100], entries: 4 });
    await expect(scanIds(join(root, 'missing'))).rejects.toMatchObject({ code: 'not-found' });
  });

  it('says whether a path is owned by uid:gid', async () => {
    const root = freshDir();
    lchownSync(root, 165536, 165536);
    expect(await needsShift(root, 165536, 165536)).toBe(false);
    expect(await needsShift(root, 165536, 0)).toBe(true);
    await expect(needsShift(join(root, 'missing'), 0, 0)).rejects.toMatchObject({ code: 'not-found' });
  });
});
