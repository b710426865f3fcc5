import { mkdir, mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import {
  assertStrictlyUnder,
  isUnder,
  mkdirChainInside,
  prepareDataRoot,
  resolveInRoot,
  resolveInside,
} from './paths.js';
import { idMapOption } from './rsync.js';

describe('idMapOption', () => {
  it.each([
    { ids: [0, 1000], offset: 165536, dir: 'up' as const, want: '0:165536,1000:166536' },
    { ids: [165536, 166536], offset: 165536, dir: 'down' as const, want: '165536:0,166536:1000' },
    // Ids below the offset were never shifted up: shifting them down would wrap around.
    { ids: [0, 165537], offset: 165536, dir: 'down' as const, want: '165537:1' },
    { ids: [], offset: 5, dir: 'up' as const, want: '' },
  ])('$dir $ids by $offset', ({ ids, offset, dir, want }) => {
    expect(idMapOption(ids, offset, dir)).toBe(want);
  });
});

describe('path guards', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'volmgr-paths-'));
    await mkdir(join(base, 'root/var/lib'), { recursive: true });
    await mkdir(join(base, 'elsewhere'));
    await symlink(join(base, 'elsewhere'), join(base, 'root/var/lib/escape'));
    await symlink('../lib', join(base, 'root/var/lib/inside'));
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it.each([
    ['/a', '/a/b', true],
    ['/a', '/a', true],
    ['/a', '/ab', false],
    ['/a', '/', false],
    ['/a/b', '/a', false],
  ])('isUnder(%s, %s) is %s', (b, p, want) => expect(isUnder(b, p)).toBe(want));

  it('refuses a path equal to or outside its base', () => {
    expect(() => assertStrictlyUnder('/d', '/d', 'p')).toThrow(/not below/);
    expect(() => assertStrictlyUnder('/d', '/d/../e', 'p')).toThrow(/not below/);
    expect(() => assertStrictlyUnder('/d', '/d/x', 'p')).not.toThrow();
  });

  it('resolves container paths inside the rootfs and refuses symlinks that lead out', async () => {
    const root = join(base, 'root');
    await expect(resolveInside(root, '/var/lib/docker', 'p')).resolves.toBe(join(root, 'var/lib/docker'));
    await expect(resolveInside(root, '/var/lib/escape', 'p')).rejects.toMatchObject({
      code: 'invalid-request',
    });
    await expect(resolveInside(root, '/var/lib/escape/deeper', 'p')).rejects.toMatchObject({
      code: 'invalid-request',
    });
    // A symlink that stays inside still changes where the write lands: refused as well.
    await expect(resolveInside(root, '/var/lib/inside/x', 'p')).rejects.toMatchObject({
      code: 'invalid-request',
    });
  });

  it('resolves a container path as the container sees it, never leaving the rootfs (issue #24)', async () => {
    const root = join(base, 'in-root');
    await mkdir(join(root, 'var/lib'), { recursive: true });
    await mkdir(join(root, 'data/docker'), { recursive: true });
    await symlink('/data/docker', join(root, 'var/lib/docker'));
    await symlink('../../data/docker', join(root, 'var/lib/rel'));
    await symlink('../../../../../../etc', join(root, 'var/lib/climb'));
    await symlink('/var/lib/loop', join(root, 'var/lib/loop'));
    await symlink('/var/lib/docker/x/../../../..', join(root, 'var/lib/dots'));
    expect(await resolveInRoot(root, '/var/lib/docker')).toBe('/data/docker');
    expect(await resolveInRoot(root, '/var/lib/rel/sub/new')).toBe('/data/docker/sub/new');
    expect(await resolveInRoot(root, '/var/lib/climb/passwd')).toBe('/etc/passwd');
    expect(await resolveInRoot(root, '/var/lib/dots')).toBe('/');
    expect(await resolveInRoot(root, '/var/lib/kubelet')).toBe('/var/lib/kubelet');
    await expect(resolveInRoot(root, '/var/lib/loop')).rejects.toMatchObject({ code: 'invalid-request' });
  });

  it('makes a dir chain with the given modes and never walks through a symlink', async () => {
    const root = join(base, 'root');
    await mkdirChainInside(root, '/opt/a/b', 0o700);
    expect((await stat(join(root, 'opt/a'))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(root, 'opt/a/b'))).mode & 0o7777).toBe(0o700);
    await expect(mkdirChainInside(root, '/var/lib/escape/new', 0o700)).rejects.toMatchObject({
      code: 'invalid-request',
    });
    await expect(stat(join(base, 'elsewhere/new'))).rejects.toThrow(/ENOENT/);
  });
});

describe('prepareDataRoot', () => {
  let base: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'volmgr-dataroot-'));
  });
  afterAll(async () => {
    await run('umount', [join(base, 'tmpfs')], { timeout: 10_000 }).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  });

  it('leaves the data root 0710 root:root, as upstream', async () => {
    const root = join(base, 'data');
    await mkdir(root, { mode: 0o755 });
    await prepareDataRoot(root);
    const st = await stat(root);
    expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o710, 0, 0]);
  });

  it('refuses a data root on tmpfs, naming the filesystem', async () => {
    const root = join(base, 'tmpfs');
    await mkdir(root);
    await run('mount', ['-t', 'tmpfs', 'tmpfs', root], { timeout: 10_000 });
    await expect(prepareDataRoot(root)).rejects.toMatchObject({
      code: 'failed-precondition',
      message: expect.stringMatching(/is on tmpfs/),
    });
  });
});
