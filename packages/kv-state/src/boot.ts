/**
 * The boot a record belongs to. State in KV outlives a reboot; the mounts and processes it
 * describes do not. A record stamped with the kernel's boot id tells a daemon, at start, whether
 * it describes something of this boot (still there) or of an earlier one (its mounts are gone,
 * its container no longer runs). One stamp and one comparison, for every daemon that needs them.
 */
import { readFileSync } from 'node:fs';
import { SysboxError } from '@sysbox-mgr-ts/contracts';

/** Where Linux tells this boot's id: a random UUID made at every boot, the same for every process. */
export const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The running kernel's boot id (`file` for tests); `internal` when it is missing or not a UUID. */
export function readBootId(file: string = BOOT_ID_FILE): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new SysboxError('internal', `cannot read the boot id from ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!UUID.test(text))
    throw new SysboxError('internal', `${file} does not hold a boot id: ${text.slice(0, 64)}`);
  return text;
}

/**
 * Which boot a record's stamp names: `this-boot`, `earlier-boot`, or `unstamped` (written by a
 * version that did not stamp). An unstamped record is taken for this boot and stamped with it:
 * an upgrade restarts the daemons, not the host, so what they recorded still runs; an upgrade
 * followed by a reboot before the new version first started is the one case this misjudges (as
 * every earlier version did).
 */
export type BootOf = 'this-boot' | 'earlier-boot' | 'unstamped';

export function bootOf(stamp: string | undefined, current: string): BootOf {
  if (stamp === undefined) return 'unstamped';
  return stamp === current ? 'this-boot' : 'earlier-boot';
}
