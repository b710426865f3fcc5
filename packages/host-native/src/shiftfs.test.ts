/**
 * The shiftfs checks on real mounts and real user namespaces. This kernel has no shiftfs, so the
 * real check fails at its first shiftfs step; to reach each later step, the steps before it are
 * replaced by stand-ins that do the same kind of mount without shiftfs (a bind mount for the
 * mark, a tmpfs mounted inside the namespace for the shiftfs mount).
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MNT_DETACH, MS_BIND, loadAddon } from './addon.js';
import { shiftfsOnOverlayfsSupported, shiftfsSupported, type ShiftfsCheckSteps } from './shiftfs.js';
import { spawnUserMountNamespace } from './userns.js';

const root = process.getuid?.() === 0;
if (!root) console.log('host-native shiftfs tests skipped: they mount, and need root');
const kernelHasShiftfs = /\bshiftfs$/m.test(readFileSync('/proc/filesystems', 'utf8'));

const checks = [
  ['ShiftfsSupported', shiftfsSupported],
  ['ShiftfsSupportedOnOverlayfs', shiftfsOnOverlayfsSupported],
] as const;

/** Stand-ins for the shiftfs steps, so the check reaches the steps after them on this kernel. */
const bindMark: Pick<ShiftfsCheckSteps, 'mark'> = { mark: (d) => loadAddon().mount(d, d, '', MS_BIND, '') };
const tmpfsInNamespace: Pick<ShiftfsCheckSteps, 'mountInUserNamespace'> = {
  mountInUserNamespace: (ns, name) => ns.run('mount', ['--no-canonicalize', '-t', 'tmpfs', 'tmpfs', name]),
};
const overflow = Object.assign(new Error('rename(2): Value too large for defined data type (EOVERFLOW)'), {
  code: 'EOVERFLOW',
});

describe.skipIf(!root)('shiftfs checks (upstream ShiftfsSupported, ShiftfsSupportedOnOverlayfs)', () => {
  let dir: string;
  let n = 0;
  const addon = loadAddon();
  beforeAll(() => {
    // 0700, as a data root is: the namespace's root cannot search it, and must not need to.
    dir = mkdtempSync(join(tmpdir(), 'hn-shiftfs-'));
  });
  afterAll(async () => {
    for (const m of mountsUnder(await readMountInfo(), dir).reverse()) addon.umount(m.mountPoint, MNT_DETACH);
    rmSync(dir, { recursive: true, force: true });
  });

  const freshDir = (): string => {
    const d = join(dir, `d${++n}`);
    mkdirSync(d, { mode: 0o700 });
    return d;
  };

  /** Nothing mounted under d, nothing left in it, no process (the namespace holder) working in it. */
  async function expectClean(d: string): Promise<void> {
    expect(mountsUnder(await readMountInfo(), d)).toEqual([]);
    expect(readdirSync(d)).toEqual([]);
    const inside = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readlinkSync(`/proc/${p}/cwd`).startsWith(d);
        } catch {
          return false;
        }
      });
    expect(inside).toEqual([]);
  }

  it.skipIf(kernelHasShiftfs).each(checks)(
    '%s on this kernel: no, at the real shiftfs mark (ENODEV), nothing left',
    async (name, check) => {
      const d = freshDir();
      const r = await check(d);
      console.log(`${name} on this kernel: ${r.reason} (${r.ms.toFixed(1)} ms)`);
      expect(r).toMatchObject({
        ok: false,
        reason: expect.stringMatching(/^shiftfs mark: mount shiftfs on .*\/test \(mark\): .*\(ENODEV\)$/),
      });
      await expectClean(d);
    },
  );

  it.each(checks)(
    '%s: a failing mark means no, and the overlay (if any) is unmounted',
    async (_name, check) => {
      const d = freshDir();
      const r = await check(d, {
        steps: {
          mark: () => {
            throw Object.assign(new Error('mount shiftfs (mark): Operation not permitted (EPERM)'), {
              code: 'EPERM',
            });
          },
        },
      });
      expect(r).toMatchObject({
        ok: false,
        reason: 'shiftfs mark: mount shiftfs (mark): Operation not permitted (EPERM)',
      });
      await expectClean(d);
    },
  );

  it.each(checks)(
    '%s: the real shiftfs mount in the user namespace fails here, and everything is undone',
    async (name, check) => {
      const d = freshDir();
      const r = await check(d, { steps: bindMark });
      console.log(`${name}, mount in the namespace: ${r.reason}`);
      expect(r.ok).toBe(false);
      // Without shiftfs the type is unknown; with it, a shiftfs mount over a non-mark is refused.
      expect(r.reason).toMatch(
        /^shiftfs mount in a user namespace: nsenter .* mount --no-canonicalize -t shiftfs -- test test: exit 32: mount: test: /,
      );
      await expectClean(d);
    },
  );

  it.each(checks)(
    '%s: a rename that fails (the EOVERFLOW kernel bug) means no, after a real create, and everything is undone',
    async (_name, check) => {
      const d = freshDir();
      const created: string[] = [];
      const r = await check(d, {
        steps: {
          ...bindMark,
          ...tmpfsInNamespace,
          createFile: async (ns, path) => {
            await ns.run('touch', ['--', path]);
            created.push((await ns.run('ls', ['--', path])).stdout);
          },
          renameFile: () => Promise.reject(overflow),
        },
      });
      expect(created).toEqual(['test/testfile']);
      expect(r).toMatchObject({
        ok: false,
        reason: expect.stringMatching(/^file rename on shiftfs .*: rename\(2\): .*\(EOVERFLOW\)$/),
      });
      await expectClean(d);
    },
  );

  it.each(checks)(
    '%s with stand-ins for shiftfs runs every step, says yes, and leaves nothing',
    async (name, check) => {
      const d = freshDir();
      const r = await check(d, { steps: { ...bindMark, ...tmpfsInNamespace } });
      console.log(`${name} with stand-ins, every step run: ${r.ms.toFixed(1)} ms`);
      expect(r).toEqual({ ok: true, ms: expect.any(Number) });
      await expectClean(d);
    },
  );

  it('says no on tmpfs, where upstream refuses to check, touching nothing', async () => {
    const d = freshDir();
    addon.mount('tmpfs', d, 'tmpfs', 0, 'size=1m');
    try {
      const r = await shiftfsSupported(d);
      expect(r).toMatchObject({ ok: false, reason: `${d} is on tmpfs; the check needs a disk filesystem` });
      expect(readdirSync(d)).toEqual([]);
    } finally {
      addon.umount(d, MNT_DETACH);
    }
  });
});

describe.skipIf(!root)('spawnUserMountNamespace', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hn-userns-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs commands as the mapped root, in its working dir, with mounts the host never sees', async () => {
    const cwd = join(dir, 'cwd');
    mkdirSync(cwd, { mode: 0o755 });
    mkdirSync(join(cwd, 'owned-by-host-root'), { mode: 0o755 });
    mkdirSync(join(cwd, 'mnt'));
    const ns = await spawnUserMountNamespace({ ids: { inside: 0, outside: 165536, size: 65536 }, cwd });
    try {
      expect(readFileSync(`/proc/${ns.pid}/uid_map`, 'utf8').trim().split(/\s+/)).toEqual([
        '0',
        '165536',
        '65536',
      ]);
      expect(readFileSync(`/proc/${ns.pid}/gid_map`, 'utf8').trim().split(/\s+/)).toEqual([
        '0',
        '165536',
        '65536',
      ]);
      expect((await ns.run('id', ['-u'])).stdout).toBe('0');
      // Its root is host uid 165536: a root-owned dir is not writable without shiftfs.
      await expect(ns.run('touch', ['owned-by-host-root/f'])).rejects.toThrow(/Permission denied/);
      await ns.run('mount', ['--no-canonicalize', '-t', 'tmpfs', 'tmpfs', 'mnt']);
      await ns.run('touch', ['mnt/inside']);
      expect((await ns.run('ls', ['mnt'])).stdout).toBe('inside');
      expect(readdirSync(join(cwd, 'mnt'))).toEqual([]);
      expect(mountsUnder(await readMountInfo(), dir)).toEqual([]);
    } finally {
      await ns.close();
    }
    expect(() => statSync(`/proc/${ns.pid}`)).toThrow();
  });
});
