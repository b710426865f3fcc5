/**
 * The kernel side of a mark, kept behind a two-call interface so the reference counting can be
 * tested with a fake where the shiftfs module is absent.
 */
import { run } from '@sysbox-mgr-ts/exec/run';
import type { Logger } from '@sysbox-mgr-ts/service-kit';

export interface Mounter {
  /** `mount -t shiftfs -o mark <source> <markpoint>`. */
  mark(source: string, markpoint: string): Promise<void>;
  /** Lazy unmount (MNT_DETACH, as upstream), so a busy mark does not block the last holder. */
  unmount(markpoint: string): Promise<void>;
}

const MOUNT_TIMEOUT_MS = 10_000;

export function createShiftfsMounter(log: Logger): Mounter {
  return {
    async mark(source, markpoint) {
      await run('mount', ['-t', 'shiftfs', '-o', 'mark', '--', source, markpoint], {
        timeout: MOUNT_TIMEOUT_MS,
        logger: log,
      });
    },
    async unmount(markpoint) {
      await run('umount', ['-l', '--', markpoint], { timeout: MOUNT_TIMEOUT_MS, logger: log });
    },
  };
}

/** How long the slowest mount call may take; a claim older than a few of these is abandoned. */
export const MOUNTER_TIMEOUT_MS = MOUNT_TIMEOUT_MS;
