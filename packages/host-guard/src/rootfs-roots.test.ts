import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertRootfsAllowed } from './rootfs-roots.js';

describe('assertRootfsAllowed', () => {
  let base: string;
  let roots: string[];
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'host-guard-roots-'));
    roots = [join(base, 'docker'), join(base, 'missing-root')];
    await mkdir(join(base, 'docker/overlay2/abc/merged'), { recursive: true });
    await mkdir(join(base, 'elsewhere/rootfs'), { recursive: true });
    await symlink(join(base, 'elsewhere/rootfs'), join(base, 'docker/overlay2/escape'));
    await symlink(join(base, 'docker/overlay2/abc/merged'), join(base, 'elsewhere/into-docker'));
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('answers the realpath of a rootfs below a root, also one reached through a symlink', async () => {
    const merged = join(base, 'docker/overlay2/abc/merged');
    await expect(assertRootfsAllowed(merged, roots)).resolves.toBe(merged);
    await expect(assertRootfsAllowed(join(base, 'elsewhere/into-docker'), roots)).resolves.toBe(merged);
  });

  it.each([
    ['the root itself', 'docker'],
    ['a dir outside every root', 'elsewhere/rootfs'],
    ['a symlink inside a root that leads out', 'docker/overlay2/escape'],
    ['a path that climbs out with ..', 'docker/overlay2/../../elsewhere/rootfs'],
  ])('refuses %s', async (_name, rel) => {
    await expect(assertRootfsAllowed(join(base, rel), roots)).rejects.toMatchObject({
      code: 'invalid-request',
      message: expect.stringContaining('allowed rootfs root'),
    });
  });

  it('refuses /etc whatever the roots', async () => {
    await expect(assertRootfsAllowed('/etc', roots)).rejects.toMatchObject({ code: 'invalid-request' });
  });
});
