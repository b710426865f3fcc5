import { chmodSync, linkSync, lchownSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { shift } from './index.js';
import { buildTree, snapshotOwners } from '../test/tree.js';
import { seededRandom } from '@sysbox-mgr-ts/bench-kit';
import { MAX_ID, canAcl, getfacl, hasPython, isRoot, owner, useScratch } from '../test/scratch.js';

const scratch = useScratch();
const { freshDir, mounts } = scratch;

describe.skipIf(!isRoot)('shift (as root, real trees)', () => {
  it('shifts every entry, the root included, and leaves a symlink target outside the tree alone', async () => {
    const outside = join(freshDir(), 'target');
    writeFileSync(outside, 'x');
    lchownSync(outside, 7, 7);
    const root = freshDir();
    lchownSync(root, 10, 20);
    mkdirSync(join(root, 'd'));
    lchownSync(join(root, 'd'), 1, 2);
    symlinkSync(outside, join(root, 'd', 'out'));
    lchownSync(join(root, 'd', 'out'), 3, 4);

    const r = await shift(root, 100_000, 200_000);

    expect(r.entries).toBe(3);
    expect(owner(root)).toBe('100010:200020');
    expect(owner(join(root, 'd'))).toBe('100001:200002');
    expect(owner(join(root, 'd', 'out'))).toBe('100003:200004');
    expect(owner(outside)).toBe('7:7');
  });

  it('gives every name of a hard-linked inode one shifted owner', async () => {
    const root = freshDir();
    mkdirSync(join(root, 'a'));
    mkdirSync(join(root, 'b'));
    writeFileSync(join(root, 'a', 'f'), '');
    lchownSync(join(root, 'a', 'f'), 5, 6);
    for (const name of ['a/g', 'b/h', 'b/i']) linkSync(join(root, 'a', 'f'), join(root, name));

    await shift(root, 1000, 2000, { workers: 2 });

    for (const name of ['a/f', 'a/g', 'b/h', 'b/i']) expect(owner(join(root, name))).toBe('1005:2006');
    expect(lstatSync(join(root, 'b', 'i')).nlink).toBe(4);
  });

  it('keeps setuid and setgid bits that chown clears', async () => {
    const root = freshDir();
    for (const [name, mode] of [
      ['suid', 0o4755],
      ['sgid', 0o2750],
      ['both', 0o6711],
      ['plain', 0o640],
    ] as const) {
      writeFileSync(join(root, name), '');
      chmodSync(join(root, name), mode);
    }
    mkdirSync(join(root, 'sgid-dir'));
    chmodSync(join(root, 'sgid-dir'), 0o2775);

    await shift(root, 165536, 165536);

    expect(lstatSync(join(root, 'suid')).mode & 0o7777).toBe(0o4755);
    expect(lstatSync(join(root, 'sgid')).mode & 0o7777).toBe(0o2750);
    expect(lstatSync(join(root, 'both')).mode & 0o7777).toBe(0o6711);
    expect(lstatSync(join(root, 'plain')).mode & 0o7777).toBe(0o640);
    expect(lstatSync(join(root, 'sgid-dir')).mode & 0o7777).toBe(0o2775);
    expect(owner(join(root, 'suid'))).toBe('165536:165536');
  });

  it.skipIf(!canAcl)(
    'shifts the ids in access and default ACLs, and keeps a setuid bit on an ACL file',
    async () => {
      const root = freshDir();
      mkdirSync(join(root, 'shared'));
      writeFileSync(join(root, 'shared', 'f'), '');
      writeFileSync(join(root, 'shared', 'odd\nname'), '');
      chmodSync(join(root, 'shared', 'f'), 0o4750);
      await run(
        'setfacl',
        ['-m', 'u:1234:rw,g:55:r', join(root, 'shared', 'f'), join(root, 'shared', 'odd\nname')],
        { timeout: 10_000 },
      );
      await run('setfacl', ['-d', '-m', 'u:777:rwx,g:88:rx', join(root, 'shared')], { timeout: 10_000 });
      const modeBefore = lstatSync(join(root, 'shared', 'f')).mode;

      await shift(root, 100_000, 200_000);

      const fileAcl = await getfacl(join(root, 'shared', 'f'));
      expect(fileAcl).toContain('user:101234:rw-');
      expect(fileAcl).toContain('group:200055:r--');
      expect(fileAcl).not.toContain('user:1234:');
      expect(await getfacl(join(root, 'shared', 'odd\nname'))).toContain('user:101234:rw-');
      const dirAcl = await getfacl(join(root, 'shared'));
      expect(dirAcl).toContain('default:user:100777:rwx');
      expect(dirAcl).toContain('default:group:200088:r-x');
      expect(lstatSync(join(root, 'shared', 'f')).mode).toBe(modeBefore);
      expect(owner(join(root, 'shared', 'f'))).toBe('100000:200000');

      await shift(root, -100_000, -200_000);
      expect(await getfacl(join(root, 'shared', 'f'))).toContain('user:1234:rw-');
    },
  );

  it.skipIf(!canAcl)(
    'shifts ACLs on tmpfs and on a hard-linked file, and entries whose names are not UTF-8',
    async () => {
      const root = freshDir();
      await run('mount', ['-t', 'tmpfs', 'id-shift-test', root], { timeout: 10_000 });
      mounts.push(root);
      writeFileSync(join(root, 'f'), '');
      linkSync(join(root, 'f'), join(root, 'f-link'));
      const latin1Name = Buffer.from(join(root, 'caf\xe9'), 'latin1');
      writeFileSync(latin1Name, '');
      await run('setfacl', ['-m', 'u:1234:rw,g:55:r', join(root, 'f')], { timeout: 10_000 });

      await shift(root, 100_000, 100_000);

      for (const name of ['f', 'f-link'])
        expect(await getfacl(join(root, name))).toContain('user:101234:rw-');
      expect(await getfacl(join(root, 'f'))).toContain('group:100055:r--');
      expect(lstatSync(latin1Name)).toMatchObject({ uid: 100_000, gid: 100_000 });
      expect(owner(join(root, 'f-link'))).toBe('100000:100000');
    },
  );

  // The addon asks for xattr names and values with a small buffer first (the kernel allocates what
  // is asked for) and retries with the exact size: cover the retry on both kinds of filesystem.
  for (const fs of ['disk', 'tmpfs'] as const) {
    it.skipIf(!canAcl || !hasPython)(
      `shifts ACLs past the first xattr buffer on ${fs}: long name lists and values, hard links, setuid bits`,
      async () => {
        const root = freshDir();
        if (fs === 'tmpfs') {
          await run('mount', ['-t', 'tmpfs', 'id-shift-test', root], { timeout: 10_000 });
          mounts.push(root);
        }
        mkdirSync(join(root, 'shared'));
        const file = join(root, 'shared', 'f');
        writeFileSync(file, '');
        chmodSync(file, 0o4750);
        linkSync(file, join(root, 'f-link'));
        // 40 user xattrs of 30-byte names: a listing of about 1.2 KiB.
        await run(
          'python3',
          [
            '-c',
            'import os, sys\nfor i in range(40): os.setxattr(sys.argv[1], "user.padding-%022d" % i, b"x")',
            file,
          ],
          { timeout: 10_000 },
        );
        // 70 named entries: ACL values of about 600 bytes.
        const many = (kind: 'u' | 'g', from: number): string =>
          Array.from({ length: 70 }, (_, i) => `${kind}:${from + i}:r`).join(',');
        await run('setfacl', ['-m', `${many('u', 2000)},g:55:r`, file], { timeout: 10_000 });
        await run('setfacl', ['-d', '-m', many('g', 3000), join(root, 'shared')], { timeout: 10_000 });
        const modeBefore = lstatSync(file).mode;

        await shift(root, 100_000, 200_000);

        for (const name of [file, join(root, 'f-link')]) {
          const acl = await getfacl(name);
          expect(acl).toContain('user:102000:r--');
          expect(acl).toContain('user:102069:r--');
          expect(acl).toContain('group:200055:r--');
          expect(acl).not.toContain('user:2000:');
          expect(owner(name)).toBe('100000:200000');
        }
        expect(lstatSync(file).mode).toBe(modeBefore);
        const dirAcl = await getfacl(join(root, 'shared'));
        expect(dirAcl).toContain('default:group:203000:r--');
        expect(dirAcl).toContain('default:group:203069:r--');

        await shift(root, -100_000, -200_000);
        expect(await getfacl(file)).toContain('user:2069:r--');
        expect(await getfacl(join(root, 'shared'))).toContain('default:group:3069:r--');
        expect(lstatSync(file)).toMatchObject({ mode: modeBefore, uid: 0, gid: 0 });
      },
    );
  }

  it('shift then shift back returns exactly the original owners and modes (random trees)', async () => {
    const rand = seededRandom(42);
    for (let round = 0; round < 4; round++) {
      const root = freshDir();
      const seed = Math.floor(rand() * 1e9);
      buildTree(root, {
        top: 2,
        sub: 3,
        perDir: 12,
        owners: [0, 1, 33, 1000, 65534],
        outside: '/etc/hostname',
        seed,
      });
      const before = snapshotOwners(root);
      const uidOffset = Math.floor(rand() * 1_000_000);
      const gidOffset = Math.floor(rand() * 1_000_000);

      await shift(root, uidOffset, gidOffset, { workers: 1 + (round % 2) });
      const shifted = snapshotOwners(root);
      for (const [path, st] of before) {
        expect(shifted.get(path), path).toEqual({ ...st, uid: st.uid + uidOffset, gid: st.gid + gidOffset });
      }
      await shift(root, -uidOffset, -gidOffset);
      expect(snapshotOwners(root)).toEqual(before);
    }
  });

  it('refuses an offset that would overflow an id, names the path, and changes nothing', async () => {
    const root = freshDir();
    buildTree(root, { top: 2, sub: 2, perDir: 10, owners: [0, 1000], outside: '/etc/hostname' });
    const culprit = join(root, 'd1', 's1', 'f3');
    lchownSync(culprit, MAX_ID - 5, 0);
    const before = snapshotOwners(root);

    const up = await shift(root, 10, 0).catch((e: unknown) => e);
    expect(up).toMatchObject({ code: 'invalid-request' });
    expect((up as Error).message).toContain(culprit);
    const down = await shift(root, -1, 0).catch((e: unknown) => e);
    expect(down).toMatchObject({ code: 'invalid-request' });
    expect(snapshotOwners(root)).toEqual(before);
  });

  it.skipIf(!canAcl)('refuses an offset that would overflow an ACL entry, and changes nothing', async () => {
    const root = freshDir();
    writeFileSync(join(root, 'f'), '');
    await run('setfacl', ['-m', `u:${MAX_ID - 1}:r`, join(root, 'f')], { timeout: 10_000 });
    const before = snapshotOwners(root);

    const err = await shift(root, 5, 5).catch((e: unknown) => e);

    expect(err).toMatchObject({ code: 'invalid-request' });
    expect((err as Error).message).toContain(join(root, 'f'));
    expect(snapshotOwners(root)).toEqual(before);
  });

  it('does not descend into a nested mount unless asked to', async () => {
    const root = freshDir();
    const nested = join(root, 'mnt');
    mkdirSync(nested);
    await run('mount', ['-t', 'tmpfs', 'id-shift-test', nested], { timeout: 10_000 });
    mounts.push(nested);
    writeFileSync(join(nested, 'inner'), '');
    writeFileSync(join(root, 'outer'), '');

    await shift(root, 500, 500);
    expect(owner(join(root, 'outer'))).toBe('500:500');
    expect(owner(join(nested, 'inner'))).toBe('0:0');
    expect(owner(nested)).toBe('0:0');

    await shift(root, -500, -500);
    expect(owner(join(root, 'outer'))).toBe('0:0');
    await shift(root, 500, 500, { crossMounts: true });
    expect(owner(join(root, 'outer'))).toBe('500:500');
    expect(owner(join(nested, 'inner'))).toBe('500:500');
  });

  it('answers not-found for a missing root and timeout when cancelled, changing nothing', async () => {
    await expect(shift(join(scratch.base, 'nope'), 1, 1)).rejects.toMatchObject({ code: 'not-found' });
    const root = freshDir();
    writeFileSync(join(root, 'f'), '');
    const ac = new AbortController();
    ac.abort();
    await expect(shift(root, 1, 1, { signal: ac.signal })).rejects.toMatchObject({ code: 'timeout' });
    expect(owner(join(root, 'f'))).toBe('0:0');
  });

  it('reports progress up to the entry count and logs while it runs', async () => {
    const root = freshDir();
    const entries = buildTree(root, { top: 3, sub: 10, perDir: 40, owners: [0], outside: '/etc/hostname' });
    const seen: number[] = [];
    const lines: object[] = [];
    const r = await shift(root, 7, 7, {
      onProgress: (d) => seen.push(d),
      logger: { info: (obj) => lines.push(obj) },
      logEveryMs: 1,
    });
    expect(r.entries).toBe(entries);
    expect(seen.at(-1)).toBe(entries);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines[0]).toMatchObject({ root, phase: expect.any(String) });
  });

  it('keeps the event loop answering during a large shift', async () => {
    const root = freshDir();
    buildTree(root, { top: 10, sub: 20, perDir: 49, owners: [0, 1000], outside: '/etc/hostname' });
    let worstGapMs = 0;
    let ticks = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstGapMs = Math.max(worstGapMs, now - last);
      last = now;
      ticks++;
    }, 2);
    const r = await shift(root, 3, 3, { acls: false });
    clearInterval(timer);
    // A blocked loop would show one gap as long as the whole shift and (almost) no ticks.
    expect(ticks).toBeGreaterThan(10);
    expect(worstGapMs).toBeLessThan(r.ms / 2);
  });
});
