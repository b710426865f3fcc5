import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  assertIdsDelegated,
  parseDelegatedRanges,
  readDelegatedRanges,
  type DelegatedRanges,
} from './subid-ranges.js';

describe('parseDelegatedRanges', () => {
  it('keeps name:start:count lines and skips comments, blanks and malformed lines', () => {
    const text = [
      '# sysbox',
      '',
      'sysbox:165536:268435456',
      '  alice:100000:65536  ',
      'bad-line',
      'bob:x:65536',
      'carol:1:0',
      'dave:4294967295:2',
      '#mallory:0:65536',
    ].join('\n');
    expect(parseDelegatedRanges(text)).toEqual([
      { name: 'sysbox', start: 165536, count: 268435456 },
      { name: 'alice', start: 100000, count: 65536 },
    ]);
  });
});

describe('assertIdsDelegated', () => {
  const ranges: DelegatedRanges = {
    subuidFile: '/etc/subuid',
    subgidFile: '/etc/subgid',
    uids: [{ name: 'sysbox', start: 165536, count: 131072 }],
    gids: [{ name: 'sysbox', start: 165536, count: 65536 }],
  };

  it('accepts a whole mapped range inside one delegated range', () => {
    expect(() => assertIdsDelegated({ uid: 165536, gid: 165536 }, ranges)).not.toThrow();
    expect(() => assertIdsDelegated({ uid: 231072, gid: 165536 }, ranges)).not.toThrow();
  });

  it.each([
    ['root', { uid: 0, gid: 0 }, /uid 0\.\.65535/],
    ['a host user', { uid: 1000, gid: 1000 }, /uid 1000\.\./],
    ['a uid range straddling the end of the delegated one', { uid: 231073, gid: 165536 }, /uid 231073\.\./],
    ['a gid range straddling the end of the delegated one', { uid: 165536, gid: 165537 }, /gid 165537\.\./],
    [
      'a range starting just below the delegated one',
      { uid: 165535, gid: 165536, count: 2 },
      /uid 165535\.\.165536/,
    ],
    ['a fractional id', { uid: 165536.5, gid: 165536 }, /uid/],
  ])('refuses %s', (_name, ids, message) => {
    expect(() => assertIdsDelegated(ids, ranges, 'prep')).toThrow(
      expect.objectContaining({ code: 'invalid-request', message: expect.stringMatching(message) }),
    );
  });

  it('refuses a range that spans two adjacent delegated ranges: each must hold all of it', () => {
    const split = {
      ...ranges,
      uids: [
        { name: 'a', start: 100000, count: 65536 },
        { name: 'b', start: 165536, count: 65536 },
      ],
    };
    expect(() => assertIdsDelegated({ uid: 100000 + 32768, gid: 165536 }, split)).toThrow(/uid 132768/);
  });
});

describe('readDelegatedRanges', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'host-guard-subid-'));
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('reads both files, sees an edit on the next call, and delegates nothing when a file is missing', async () => {
    const subuid = join(base, 'subuid');
    const subgid = join(base, 'subgid');
    await writeFile(subuid, 'sysbox:165536:65536\n');
    await writeFile(subgid, 'sysbox:200000:65536\n');
    const first = readDelegatedRanges(subuid, subgid);
    expect(first.uids).toEqual([{ name: 'sysbox', start: 165536, count: 65536 }]);
    expect(first.gids).toEqual([{ name: 'sysbox', start: 200000, count: 65536 }]);
    expect(readDelegatedRanges(subuid, subgid).uids).toBe(first.uids);

    await writeFile(subuid, 'sysbox:165536:65536\nother:300000:65536\n');
    expect(readDelegatedRanges(subuid, subgid).uids).toHaveLength(2);

    const none = readDelegatedRanges(join(base, 'no-subuid'), subgid);
    expect(none.uids).toEqual([]);
    expect(() => assertIdsDelegated({ uid: 165536, gid: 200000 }, none)).toThrow(/no-subuid/);
  });
});
