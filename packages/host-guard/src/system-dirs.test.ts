import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '@sysbox-mgr-ts/exec';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SYSTEM_DIRS, assertNotSystemDir } from './system-dirs.js';

describe('assertNotSystemDir', () => {
  let base: string;
  let dataRoot: string;
  const check = (path: string) => assertNotSystemDir(path, { dataRoot, what: 'mount source' });

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'host-guard-sys-'));
    dataRoot = join(base, 'lib/sysbox');
    await mkdir(join(dataRoot, 'docker/c1'), { recursive: true });
    await mkdir(join(base, 'home/user'), { recursive: true });
    await symlink('/etc', join(base, 'etc-link'));
    await symlink('/usr/share', join(base, 'share-link'));
    await symlink(join(base, 'lib'), join(base, 'data-parent-link'));
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it.each(SYSTEM_DIRS.filter((d) => existsSync(d)))('refuses the system dir %s', async (dir) => {
    await expect(check(dir)).rejects.toMatchObject({
      code: 'invalid-request',
      message: expect.stringContaining(dir),
    });
  });

  it.each([
    ['a file in /etc', '/etc/passwd', /system tree \/etc/],
    ['a dir below /usr', '/usr/bin', /system tree \/usr/],
    ['a /proc entry', '/proc/self', /system tree \/proc/],
    ['a path climbing out with ..', '/tmp/../etc', /system/],
  ])('refuses %s', async (_name, path, rule) => {
    await expect(check(path)).rejects.toMatchObject({
      code: 'invalid-request',
      message: expect.stringMatching(rule),
    });
  });

  it('refuses symlinks into system trees, naming where they resolve', async () => {
    await expect(check(join(base, 'etc-link'))).rejects.toMatchObject({
      message: expect.stringContaining('resolves to /etc'),
    });
    await expect(check(join(base, 'etc-link/ssh'))).rejects.toMatchObject({ code: 'invalid-request' });
    await expect(check(join(base, 'share-link'))).rejects.toMatchObject({
      message: expect.stringMatching(/system tree \/usr/),
    });
  });

  it('refuses the data root and every parent of it (also through a symlink), allows what lies below', async () => {
    for (const p of [
      dataRoot,
      join(base, 'lib'),
      base,
      join(base, 'data-parent-link'),
      join(base, 'data-parent-link/sysbox'),
    ]) {
      await expect(check(p), p).rejects.toMatchObject({
        code: 'invalid-request',
        message: expect.stringContaining(dataRoot),
      });
    }
    await expect(check(join(dataRoot, 'docker/c1'))).resolves.toBe(join(dataRoot, 'docker/c1'));
    await expect(check(join(base, 'home/user'))).resolves.toBe(join(base, 'home/user'));
  });

  it('refuses a state dir given at start, below it and above it', async () => {
    const stateDir = join(base, 'home/user/state');
    await mkdir(stateDir, { recursive: true });
    for (const p of [stateDir, join(base, 'home/user')]) {
      await expect(assertNotSystemDir(p, { dataRoot, stateDir })).rejects.toMatchObject({
        code: 'invalid-request',
      });
    }
  });

  it('answers not-found for a missing path', async () => {
    await expect(check(join(base, 'nope'))).rejects.toMatchObject({ code: 'not-found' });
  });

  describe('a bind mount of /etc at a temp dir', () => {
    let target = '';
    afterEach(async () => {
      if (target) await run('umount', [target], { timeout: 10_000 });
      target = '';
    });

    it('is refused, and so is everything below it', async () => {
      const dir = join(base, 'looks-harmless');
      await mkdir(dir);
      await run('mount', ['--bind', '/etc', dir], { timeout: 10_000 });
      target = dir;
      await expect(check(dir)).rejects.toMatchObject({
        code: 'invalid-request',
        message: expect.stringContaining('bind mount of the system directory /etc'),
      });
      await expect(check(join(dir, 'ssh'))).rejects.toMatchObject({
        code: 'invalid-request',
        message: expect.stringContaining('/etc'),
      });
    });

    it('of / is refused at its mount point', async () => {
      const dir = join(base, 'whole-host');
      await mkdir(dir, { recursive: true });
      await run('mount', ['--bind', '/', dir], { timeout: 10_000 });
      target = dir;
      await expect(check(dir)).rejects.toMatchObject({
        code: 'invalid-request',
        message: expect.stringContaining('system directory /'),
      });
      await expect(check(join(dir, 'usr/bin'))).rejects.toMatchObject({ code: 'invalid-request' });
    });
  });
});
