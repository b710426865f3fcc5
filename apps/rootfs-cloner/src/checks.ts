/** The host checks on what a request or a record read back from KV names: allowed roots, delegated ids. */
import { SysboxError, isSysboxError } from '@sysbox-mgr-ts/contracts';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { exists } from './fs.js';
import type { CloneRecord } from './records.js';

/** The runtime's dirs a record names (we bind over them, unmount them, mount its layers): allowed roots only. */
export async function recordedRuntimeDirsAllowed(guard: HostGuard, rec: CloneRecord): Promise<void> {
  const named = [
    [rec.origRootfs, 'rootfs'],
    [rec.origUpperDir, 'upper dir'],
    [rec.origWorkDir, 'work dir'],
    ...rec.lowerDirs.map((d) => [d, 'lower dir'] as const),
  ] as const;
  for (const [path, what] of named) {
    if (!(await exists(path))) continue;
    try {
      await guard.allowedRootfs(path, `recorded ${what} of clone ${rec.id}`);
    } catch (err) {
      // The runtime deletes its rootfs while a removal runs: a dir gone between the two checks
      // holds no mount to act on, as one gone before them. A refusal of a dir that is there stands.
      if (isSysboxError(err, 'not-found') && !(await exists(path))) continue;
      throw err;
    }
  }
}

/** Positive offsets into a delegated range; undoing one is revert-chown's job, from the record. */
export async function offsetsDelegated(
  guard: HostGuard,
  uidOffset: number,
  gidOffset: number,
  what: string,
): Promise<void> {
  if (uidOffset < 0 || gidOffset < 0) {
    throw new SysboxError(
      'invalid-request',
      `${what}: negative offset ${uidOffset}:${gidOffset} is refused; only a revert undoes a recorded shift`,
    );
  }
  await guard.idsDelegated({ uid: uidOffset, gid: gidOffset }, what);
}
