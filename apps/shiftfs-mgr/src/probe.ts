/**
 * Whether shiftfs works on this host, as upstream's manager decides it at start: load the module
 * (it may be built but not loaded), see whether the kernel lists shiftfs in /proc/filesystems,
 * and if so try it for real, twice: on a plain dir and on overlayfs (sysbox-libs
 * ShiftfsSupported / ShiftfsSupportedOnOverlayfs, through @sysbox-mgr-ts/host-native), because
 * kernels exist where the module loads and mounts but renames fail.
 * `--disable-shiftfs-precheck` skips the tries and trusts the list, as upstream's flag does.
 */
import { readFile } from 'node:fs/promises';
import { run, type RunResult } from '@sysbox-mgr-ts/exec/run';
import type { ProbeResult } from '@sysbox-mgr-ts/host-native';
import type { Logger } from '@sysbox-mgr-ts/service-kit';

/** One answer, with the sentence an operator can act on (logged at start, sent in `list`). */
export interface ShiftfsAnswer {
  supported: boolean;
  reason: string;
}

export interface ShiftfsProbe extends ShiftfsAnswer {
  /**
   * The kernel can mount shiftfs (listed after modprobe): marks are made when asked, and refused
   * (`unsupported`, with `reason`) without it. `supported` may still be false: the kernel has it
   * but it failed the functional check.
   */
  inKernel: boolean;
  /** shiftfs marks on overlayfs mounts (a container's rootfs) work too. */
  onOverlayfs: ShiftfsAnswer;
}

/** The functional checks (host-native's by default); each tries shiftfs under dir and undoes it. */
export interface ShiftfsChecks {
  shiftfs(dir: string): Promise<ProbeResult>;
  onOverlayfs(dir: string): Promise<ProbeResult>;
}

export interface ProbeOptions {
  /** Try `modprobe shiftfs` before reading the list (off with --no-modprobe). */
  modprobe: boolean;
  /** Try shiftfs for real when the kernel lists it (off with --disable-shiftfs-precheck: trust the list). */
  precheck: boolean;
  /** Where the checks make their throw-away dirs: the service's own dir, on the data root's filesystem. */
  checkDir: string;
  filesystemsPath?: string;
  runCommand?: (file: string, args: readonly string[]) => Promise<RunResult>;
  checks?: ShiftfsChecks;
  log: Logger;
}

const MODPROBE_TIMEOUT_MS = 10_000;

/**
 * host-native's checks, loaded only on a kernel that lists shiftfs: its index brings the user
 * namespace helpers and through them execa, which a daemon that never probes need not hold.
 */
const hostChecks: ShiftfsChecks = {
  shiftfs: async (dir) => (await import('@sysbox-mgr-ts/host-native')).shiftfsSupported(dir),
  onOverlayfs: async (dir) => (await import('@sysbox-mgr-ts/host-native')).shiftfsOnOverlayfsSupported(dir),
};

export function listsShiftfs(procFilesystems: string): boolean {
  // Lines are "nodev\t<type>" or "\t<type>".
  return procFilesystems.split('\n').some((line) => line.trim().split(/\s+/).pop() === 'shiftfs');
}

/** Both answers the same: the functional checks were not run. */
const unchecked = (inKernel: boolean, reason: string): ShiftfsProbe => ({
  inKernel,
  supported: inKernel,
  reason,
  onOverlayfs: { supported: inKernel, reason },
});

export async function probeShiftfs(opts: ProbeOptions): Promise<ShiftfsProbe> {
  const filesystemsPath = opts.filesystemsPath ?? '/proc/filesystems';
  const runCommand =
    opts.runCommand ?? ((file, args) => run(file, args, { timeout: MODPROBE_TIMEOUT_MS, logger: opts.log }));
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
    return unchecked(false, `cannot read ${filesystemsPath}: ${(err as Error).message}`);
  }
  if (!listed) {
    return unchecked(
      false,
      `this kernel has no shiftfs (not listed in ${filesystemsPath}; ${modprobeNote}); shiftfs is an Ubuntu-only module, use ID-mapped mounts instead`,
    );
  }
  if (!opts.precheck)
    return unchecked(true, `shiftfs is listed in ${filesystemsPath}; not tried (--disable-shiftfs-precheck)`);

  const checks = opts.checks ?? hostChecks;
  // Each check has its own dir and namespaces, so they run at once.
  const [plain, overlay] = await Promise.all([
    checks.shiftfs(opts.checkDir),
    checks.onOverlayfs(opts.checkDir),
  ]);
  const answer = (r: ProbeResult, where: string): ShiftfsAnswer => {
    const ms = `${r.ms.toFixed(1)} ms`;
    return r.ok
      ? {
          supported: true,
          reason: `shiftfs works${where}: a file on it was created and renamed in a user namespace (${ms})`,
        }
      : {
          supported: false,
          reason: `shiftfs is listed in ${filesystemsPath} but does not work${where}: ${r.reason} (${ms})`,
        };
  };
  return { inKernel: true, ...answer(plain, ''), onOverlayfs: answer(overlay, ' on overlayfs') };
}
