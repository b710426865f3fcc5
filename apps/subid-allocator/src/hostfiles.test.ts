import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_LIMITS,
  parseLoginDefs,
  parseSubidFile,
  planSubidPool,
  setupSubidPool,
  writeFileAtomic,
  type SubidLimits,
} from './hostfiles.js';

const B = 65536;

describe('parseLoginDefs', () => {
  it.each([
    [
      'empty file: upstream sysbox-mgr defaults (100000 to the top of the 32-bit id space)',
      '',
      { uidMin: 100000, uidMax: 2 ** 32 - 2, gidMin: 100000, gidMax: 2 ** 32 - 2 },
    ],
    [
      'overrides with comments and tabs',
      '# SUB_UID_MIN 1\nSUB_UID_MIN\t200000\n  SUB_UID_MAX 300000\nSUB_GID_MIN 400000\nSUB_GID_MAX 900000\nUID_MIN 1000\n',
      { uidMin: 200000, uidMax: 300000, gidMin: 400000, gidMax: 900000 },
    ],
    ['SUB_UID_COUNT is not SUB_UID_MIN', 'SUB_UID_COUNT 65536\n', DEFAULT_LIMITS],
  ])('%s', (_name, text, want) => {
    expect(parseLoginDefs(text)).toEqual(want);
  });

  it.each([
    ['no value', 'SUB_UID_MIN\n', /login.defs:1: SUB_UID_MIN needs a number/],
    ['not a number', 'SUB_GID_MAX lots\n', /SUB_GID_MAX needs a number/],
    ['min above max', 'SUB_UID_MIN 500\nSUB_UID_MAX 400\n', /must not exceed/],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseLoginDefs(text)).toThrow(message);
  });
});

describe('parseSubidFile', () => {
  it('reads entries and keeps blank and comment lines', () => {
    expect(parseSubidFile('# users\nalice:100000:65536\n\nbob:165536:65536')).toEqual([
      { verbatim: '# users' },
      { name: 'alice', start: 100000, count: 65536 },
      { verbatim: '' },
      { name: 'bob', start: 165536, count: 65536 },
    ]);
  });

  it.each(['alice:100000', 'alice:x:65536', 'alice:1:0', 'alice:4294967295:10'])(
    'refuses "%s" with its line number',
    (line) => {
      expect(() => parseSubidFile(`ok:1:1\n${line}\n`, '/etc/subuid')).toThrow(
        /\/etc\/subuid:2: expected name:start:count/,
      );
    },
  );
});

describe('planSubidPool', () => {
  const limits: SubidLimits = { uidMin: 100000, uidMax: 600100000, gidMin: 100000, gidMax: 600100000 };
  const plan = (uid: string, gid: string, size = B, l = limits) =>
    planSubidPool({
      user: 'sysbox',
      size,
      limits: l,
      uidLines: parseSubidFile(uid),
      gidLines: parseSubidFile(gid),
    });

  it.each([
    { name: 'empty files', uid: '', gid: '', start: 100000, uidText: 'sysbox:100000:65536\n' },
    {
      name: 'after other users, which stay as they are',
      uid: 'alice:100000:65536\n',
      gid: 'alice:100000:65536\n',
      start: 165536,
      uidText: 'alice:100000:65536\nsysbox:165536:65536\n',
    },
    {
      name: 'in a hole free in both files',
      uid: 'a:100000:65536\nb:300000:65536\n',
      gid: 'c:165536:65536\n',
      start: 231072,
      uidText: 'a:100000:65536\nb:300000:65536\nsysbox:231072:65536\n',
    },
    {
      name: 'the hole between two users when it is large enough',
      uid: 'a:100000:65536\nb:400000:65536\n',
      gid: '',
      start: 165536,
      uidText: 'a:100000:65536\nb:400000:65536\nsysbox:165536:65536\n',
    },
    {
      name: 'a wrong-sized sysbox entry grows in place when it fits',
      uid: 'sysbox:165536:65536\nalice:100000:65536\n',
      gid: 'sysbox:165536:65536\n',
      size: 4 * B,
      start: 165536,
      uidText: 'sysbox:165536:262144\nalice:100000:65536\n',
    },
    {
      name: 'a wrong-sized sysbox entry moves when it would overlap another user',
      uid: 'sysbox:100000:65536\nbob:165536:65536\n',
      gid: 'sysbox:100000:65536\n',
      size: 2 * B,
      start: 231072,
      uidText: 'sysbox:231072:131072\nbob:165536:65536\n',
    },
    {
      name: 'several sysbox entries become one',
      uid: 'sysbox:100000:65536\nsysbox:300000:65536\n',
      gid: 'sysbox:100000:65536\n',
      start: 100000,
      uidText: 'sysbox:100000:65536\n',
      gidText: undefined,
    },
    {
      name: 'a correct entry is left alone',
      uid: 'alice:100000:65536\nsysbox:165536:65536\n',
      gid: 'alice:100000:65536\nsysbox:165536:65536\n',
      start: 165536,
      uidText: undefined,
      gidText: undefined,
    },
    {
      name: 'mismatched uid and gid entries are made to match',
      uid: 'sysbox:100000:65536\n',
      gid: 'alice:100000:65536\nsysbox:165536:65536\n',
      start: 165536,
      uidText: 'sysbox:165536:65536\n',
      gidText: undefined,
    },
  ])('places the pool: $name', ({ uid, gid, size, start, uidText, ...rest }) => {
    const p = plan(uid, gid, size);
    expect(p.start).toBe(start);
    expect(p.uidText).toBe(uidText);
    if ('gidText' in rest) expect(p.gidText).toBe(rest.gidText);
    else expect(p.gidText).toContain(`sysbox:${start}:${size ?? B}\n`);
  });

  it('respects the limits of login.defs', () => {
    expect(plan('', '', B, { uidMin: 200000, uidMax: 900000, gidMin: 300000, gidMax: 900000 }).start).toBe(
      300000,
    );
  });

  it('says what to fix when no common range fits', () => {
    const tight = { uidMin: 100000, uidMax: 300000, gidMin: 100000, gidMax: 300000 };
    expect(() => plan('a:100000:65536\n', 'b:200000:65536\n', B, tight)).toThrow(
      /no range of 65536 ids for user sysbox is free in both subuid .* and subgid .*raise SUB_UID_MAX\/SUB_GID_MAX .* or lower --pool-size/,
    );
  });
});

describe('setupSubidPool on temp files', () => {
  let dir: string;
  let files: { subuidFile: string; subgidFile: string; loginDefs: string };
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'subid-alloc-hostfiles-'));
    files = {
      subuidFile: join(dir, 'subuid'),
      subgidFile: join(dir, 'subgid'),
      loginDefs: join(dir, 'login.defs'),
    };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates missing files and then leaves them alone', async () => {
    const first = await setupSubidPool({ ...files, user: 'sysbox', size: B });
    expect(first).toEqual({ start: 100000, size: B, written: [files.subuidFile, files.subgidFile] });
    expect(await readFile(files.subuidFile, 'utf8')).toBe('sysbox:100000:65536\n');
    expect(await readFile(files.subgidFile, 'utf8')).toBe('sysbox:100000:65536\n');
    expect((await stat(files.subuidFile)).mode & 0o777).toBe(0o644);
    const again = await setupSubidPool({ ...files, user: 'sysbox', size: B });
    expect(again.written).toEqual([]);
  });

  it('sets up on empty files, on files with other users, and fixes a wrong-sized entry', async () => {
    await writeFile(files.subuidFile, '');
    await writeFile(files.subgidFile, '');
    await writeFile(files.loginDefs, 'SUB_UID_MIN 1000000\nSUB_GID_MIN 1000000\n');
    expect((await setupSubidPool({ ...files, user: 'sysbox', size: B })).start).toBe(1000000);

    await writeFile(files.subuidFile, 'alice:1000000:65536\nsysbox:1065536:65536\n');
    await chmod(files.subuidFile, 0o600);
    await writeFile(files.subgidFile, 'alice:1000000:65536\nsysbox:1065536:65536\nbob:1200000:65536\n');
    const grown = await setupSubidPool({ ...files, user: 'sysbox', size: 4096 * B });
    expect(grown.start).toBe(1265536);
    expect(await readFile(files.subuidFile, 'utf8')).toBe('alice:1000000:65536\nsysbox:1265536:268435456\n');
    expect(await readFile(files.subgidFile, 'utf8')).toBe(
      'alice:1000000:65536\nsysbox:1265536:268435456\nbob:1200000:65536\n',
    );
    expect((await stat(files.subuidFile)).mode & 0o777).toBe(0o600);
    expect((await readdir(dir)).sort()).toEqual(['login.defs', 'subgid', 'subuid']);
  });

  it('changes nothing when the pool cannot be placed', async () => {
    await writeFile(files.loginDefs, 'SUB_UID_MAX 200000\n');
    await writeFile(files.subuidFile, 'alice:100000:65536\n');
    await expect(setupSubidPool({ ...files, user: 'sysbox', size: B })).rejects.toMatchObject({
      code: 'failed-precondition',
    });
    expect(await readFile(files.subuidFile, 'utf8')).toBe('alice:100000:65536\n');
    await expect(stat(files.subgidFile)).rejects.toThrow();
  });

  it('writeFileAtomic replaces a file through a rename (the inode changes, no temp file stays)', async () => {
    const path = join(dir, 'f');
    await writeFile(path, 'old\n');
    const before = (await stat(path)).ino;
    await writeFileAtomic(path, 'new\n');
    expect(await readFile(path, 'utf8')).toBe('new\n');
    expect((await stat(path)).ino).not.toBe(before);
    expect(await readdir(dir)).toEqual(['f']);
  });
});
