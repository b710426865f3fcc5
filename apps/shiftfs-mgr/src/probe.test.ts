import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import type { ProbeResult } from '@sysbox-mgr-ts/host-native';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listsShiftfs, probeShiftfs, type ShiftfsChecks } from './probe.js';
import { captureLogger } from '../test/fake-kernel.js';

describe('listsShiftfs', () => {
  it.each([
    ['nodev\tsysfs\n\text4\nnodev\tshiftfs\n', true],
    ['nodev\tsysfs\n\text4\nnodev\toverlay\n', false],
    ['nodev\tshiftfs2\n', false],
    ['', false],
  ])('%j -> %s', (text, expected) => {
    expect(listsShiftfs(text)).toBe(expected);
  });
});

describe('probeShiftfs', () => {
  let dir: string;
  let checkDir: string;
  const log = captureLogger().log;
  /** Checks that answer as given and record the dirs they were run in. */
  const fakeChecks = (plain: ProbeResult, overlay: ProbeResult) => {
    const ran: string[] = [];
    const checks: ShiftfsChecks = {
      shiftfs: async (d) => (ran.push(`shiftfs ${d}`), plain),
      onOverlayfs: async (d) => (ran.push(`onOverlayfs ${d}`), overlay),
    };
    return { checks, ran };
  };
  const refusingChecks: ShiftfsChecks = {
    shiftfs: () => Promise.reject(new Error('the functional check must not run')),
    onOverlayfs: () => Promise.reject(new Error('the functional check must not run')),
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shiftfsmgr-probe-'));
    checkDir = join(dir, 'check');
    await mkdir(checkDir);
    await writeFile(join(dir, 'with'), 'nodev\tsysfs\nnodev\tshiftfs\n');
    await writeFile(join(dir, 'without'), 'nodev\tsysfs\n\text4\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('tries modprobe first, reads the list after it, then tries shiftfs for real, plain and on overlayfs, in the check dir', async () => {
    const calls: string[][] = [];
    const { checks, ran } = fakeChecks({ ok: true, ms: 20 }, { ok: true, ms: 25 });
    const probe = await probeShiftfs({
      modprobe: true,
      precheck: true,
      checkDir,
      filesystemsPath: join(dir, 'with'),
      runCommand: async (file, args) => {
        calls.push([file, ...args]);
        return { stdout: '', stderr: '', exitCode: 0 };
      },
      checks,
      log,
    });
    expect(calls).toEqual([['modprobe', 'shiftfs']]);
    expect(ran.sort()).toEqual([`onOverlayfs ${checkDir}`, `shiftfs ${checkDir}`]);
    expect(probe).toEqual({
      inKernel: true,
      supported: true,
      reason: 'shiftfs works: a file on it was created and renamed in a user namespace (20.0 ms)',
      onOverlayfs: {
        supported: true,
        reason:
          'shiftfs works on overlayfs: a file on it was created and renamed in a user namespace (25.0 ms)',
      },
    });
  });

  it('listed but failing its functional check is no, with the failure as the reason; overlayfs is answered apart', async () => {
    const { checks } = fakeChecks(
      { ok: true, ms: 20 },
      { ok: false, reason: 'file rename on shiftfs: EOVERFLOW', ms: 30 },
    );
    const probe = await probeShiftfs({
      modprobe: false,
      precheck: true,
      checkDir,
      filesystemsPath: join(dir, 'with'),
      checks,
      log,
    });
    expect(probe).toMatchObject({ inKernel: true, supported: true });
    expect(probe.onOverlayfs).toEqual({
      supported: false,
      reason: `shiftfs is listed in ${join(dir, 'with')} but does not work on overlayfs: file rename on shiftfs: EOVERFLOW (30.0 ms)`,
    });
    const { checks: bothFail } = fakeChecks(
      { ok: false, reason: 'shiftfs mark: EPERM', ms: 1 },
      { ok: false, reason: 'shiftfs mark: EPERM', ms: 1 },
    );
    const failed = await probeShiftfs({
      modprobe: false,
      precheck: true,
      checkDir,
      filesystemsPath: join(dir, 'with'),
      checks: bothFail,
      log,
    });
    expect(failed).toMatchObject({
      inKernel: true,
      supported: false,
      reason: expect.stringMatching(/does not work: shiftfs mark: EPERM/),
    });
  });

  it('--disable-shiftfs-precheck trusts the list: yes for both without trying', async () => {
    const probe = await probeShiftfs({
      modprobe: false,
      precheck: false,
      checkDir,
      filesystemsPath: join(dir, 'with'),
      checks: refusingChecks,
      log,
    });
    const reason = `shiftfs is listed in ${join(dir, 'with')}; not tried (--disable-shiftfs-precheck)`;
    expect(probe).toEqual({
      inKernel: true,
      supported: true,
      reason,
      onOverlayfs: { supported: true, reason },
    });
  });

  it('says why when shiftfs is absent, tries nothing, and skips modprobe when told to', async () => {
    const calls: string[][] = [];
    const runCommand = async (file: string, args: readonly string[]) => {
      calls.push([file, ...args]);
      throw new SysboxError('unsupported', 'modprobe is not installed');
    };
    const failed = await probeShiftfs({
      modprobe: true,
      precheck: true,
      checkDir,
      filesystemsPath: join(dir, 'without'),
      runCommand,
      checks: refusingChecks,
      log,
    });
    const reason = expect.stringMatching(/no shiftfs .*modprobe is not installed/);
    expect(failed).toEqual({
      inKernel: false,
      supported: false,
      reason,
      onOverlayfs: { supported: false, reason },
    });
    const skipped = await probeShiftfs({
      modprobe: false,
      precheck: true,
      checkDir,
      filesystemsPath: join(dir, 'without'),
      runCommand,
      log,
    });
    expect(skipped.reason).toMatch(/--no-modprobe/);
    expect(calls).toHaveLength(1);
  });

  it('an unreadable list means unsupported, not a crash', async () => {
    const probe = await probeShiftfs({
      modprobe: false,
      precheck: true,
      checkDir,
      filesystemsPath: join(dir, 'missing'),
      log,
    });
    expect(probe).toMatchObject({
      inKernel: false,
      supported: false,
      reason: expect.stringMatching(/cannot read/),
    });
  });

  it('on this host, agrees with /proc/filesystems after the real modprobe', async () => {
    const started = performance.now();
    const probe = await probeShiftfs({ modprobe: true, precheck: true, checkDir, log });
    const ms = performance.now() - started;
    console.log(`probe at start on this host: ${ms.toFixed(1)} ms (modprobe included): ${probe.reason}`);
    const listed = listsShiftfs(await readFile('/proc/filesystems', 'utf8'));
    expect(probe.inKernel).toBe(listed);
    if (!listed)
      expect(probe.reason).toMatch(
        /^this kernel has no shiftfs \(not listed in \/proc\/filesystems; modprobe shiftfs failed: /,
      );
  });

  it.runIf(process.getuid?.() === 0)(
    'past the list, the real checks on this kernel say no at the real failure, timed, and leave nothing',
    async () => {
      const probe = await probeShiftfs({
        modprobe: false,
        precheck: true,
        checkDir,
        filesystemsPath: join(dir, 'with'),
        log,
      });
      console.log(`real functional checks on this kernel:\n  ${probe.reason}\n  ${probe.onOverlayfs.reason}`);
      if (!listsShiftfs(await readFile('/proc/filesystems', 'utf8'))) {
        for (const answer of [probe, probe.onOverlayfs]) {
          expect(answer).toMatchObject({
            supported: false,
            reason: expect.stringMatching(
              /does not work.*: shiftfs mark: mount shiftfs on .*: No such device \(ENODEV\) \(\d+\.\d ms\)$/,
            ),
          });
        }
      }
      // Each answer names its own wall time; the gateway bench holds the probe times to their budget.
      for (const answer of [probe, probe.onOverlayfs]) expect(answer.reason).toMatch(/\(\d+\.\d ms\)$/);
      expect(await readdir(checkDir)).toEqual([]);
      expect(mountsUnder(await readMountInfo(), checkDir)).toEqual([]);
    },
  );
});
