import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listsShiftfs, probeShiftfs } from './probe.js';
import { captureLogger } from './testing/fake-kernel.js';

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
  const log = captureLogger().log;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shiftfsmgr-probe-'));
    await writeFile(join(dir, 'with'), 'nodev\tsysfs\nnodev\tshiftfs\n');
    await writeFile(join(dir, 'without'), 'nodev\tsysfs\n\text4\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('tries modprobe first, and reads the list after it', async () => {
    const calls: string[][] = [];
    const probe = await probeShiftfs({
      modprobe: true,
      filesystemsPath: join(dir, 'with'),
      runCommand: async (file, args) => {
        calls.push([file, ...args]);
        return { stdout: '', stderr: '', exitCode: 0 };
      },
      log,
    });
    expect(calls).toEqual([['modprobe', 'shiftfs']]);
    expect(probe.supported).toBe(true);
  });

  it('says why when shiftfs is absent, and skips modprobe when told to', async () => {
    const calls: string[][] = [];
    const runCommand = async (file: string, args: readonly string[]) => {
      calls.push([file, ...args]);
      throw new SysboxError('unsupported', 'modprobe is not installed');
    };
    const failed = await probeShiftfs({ modprobe: true, filesystemsPath: join(dir, 'without'), runCommand, log });
    expect(failed).toEqual({ supported: false, reason: expect.stringMatching(/no shiftfs .*modprobe is not installed/) });
    const skipped = await probeShiftfs({ modprobe: false, filesystemsPath: join(dir, 'without'), runCommand, log });
    expect(skipped.reason).toMatch(/--no-modprobe/);
    expect(calls).toHaveLength(1);
  });

  it('an unreadable list means unsupported, not a crash', async () => {
    const probe = await probeShiftfs({ modprobe: false, filesystemsPath: join(dir, 'missing'), log });
    expect(probe).toEqual({ supported: false, reason: expect.stringMatching(/cannot read/) });
  });

  it('on this host, agrees with /proc/filesystems after the real modprobe', async () => {
    const probe = await probeShiftfs({ modprobe: true, log });
    expect(probe.supported).toBe(listsShiftfs(await readFile('/proc/filesystems', 'utf8')));
  });
});
