/**
 * Whether this kernel can mount shiftfs. Upstream loads the module first (it may be built but
 * not loaded), then trusts /proc/filesystems: that file lists every filesystem type the
 * running kernel can mount right now.
 */
import { readFile } from 'node:fs/promises';
import { run, type RunResult } from '@sysbox-mgr-ts/exec';
import type { Logger } from '@sysbox-mgr-ts/service-kit';

export interface ShiftfsProbe {
  supported: boolean;
  /** One sentence an operator can act on; ends up in the `unsupported` error and the start log. */
  reason: string;
}

export interface ProbeOptions {
  /** Try `modprobe shiftfs` before reading the list (off with --no-modprobe). */
  modprobe: boolean;
  filesystemsPath?: string;
  runCommand?: (file: string, args: readonly string[]) => Promise<RunResult>;
  log: Logger;
}

const MODPROBE_TIMEOUT_MS = 10_000;

export function listsShiftfs(procFilesystems: string): boolean {
  // Lines are "nodev\t<type>" or "\t<type>".
  return procFilesystems.split('\n').some((line) => line.trim().split(/\s+/).pop() === 'shiftfs');
}

export async function probeShiftfs(opts: ProbeOptions): Promise<ShiftfsProbe> {
  const filesystemsPath = opts.filesystemsPath ?? '/proc/filesystems';
  const runCommand = opts.runCommand ?? ((file, args) => run(file, args, { timeout: MODPROBE_TIMEOUT_MS, logger: opts.log }));
  let modprobeNote = 'modprobe skipped (--no-modprobe)';
  if (opts.modprobe) {
    try {
      await runCommand('modprobe', ['shiftfs']);
      modprobeNote = 'modprobe shiftfs succeeded';
    } catch (err) {
      // A missing module or a missing modprobe is the normal case on non-Ubuntu kernels.
      modprobeNote = `modprobe shiftfs failed: ${(err as Error).message}`;
      opts.log.debug({ err }, 'modprobe shiftfs failed');
    }
  }
  let listed: boolean;
  try {
    listed = listsShiftfs(await readFile(filesystemsPath, 'utf8'));
  } catch (err) {
    return { supported: false, reason: `cannot read ${filesystemsPath}: ${(err as Error).message}` };
  }
  return listed
    ? { supported: true, reason: `shiftfs is listed in ${filesystemsPath}` }
    : {
        supported: false,
        reason: `this kernel has no shiftfs (not listed in ${filesystemsPath}; ${modprobeNote}); shiftfs is an Ubuntu-only module, use ID-mapped mounts instead`,
      };
}
