/**
 * Service replies checked before sysbox-runc sees them: a service answering with a host path or
 * ids of its choosing (a bug, or a forged reply) must not reach the runtime. Volume mounts must be
 * vol-mgr's `<data root>/<hostDir>/<id>`; subid ranges must lie in one range the subid files delegate.
 */
import { posix } from 'node:path';
import { SysboxError, VOLUME_LAYOUT, type OciMount, type VolumeKind } from '@sysbox-mgr-ts/contracts';
import { assertIdsDelegated, readDelegatedRanges } from '@sysbox-mgr-ts/host-guard';
import type { Logger } from '@sysbox-mgr-ts/service-kit';

export interface ReplyCheckOptions {
  dataRoot: string;
  subuidFile: string;
  subgidFile: string;
}

export interface ReplyChecks {
  /** The mounts as they came, or `internal` when one's source is not the volume's dir. */
  volumeMounts(id: string, kind: VolumeKind, mounts: OciMount[]): OciMount[];
  /** Resolves when `size` ids from uid and from gid are delegated; `internal` otherwise. */
  subids(id: string, reply: { uid: number; gid: number; size: number }): Promise<void>;
}

export function createReplyChecks(opts: ReplyCheckOptions, log: Logger): ReplyChecks {
  return {
    volumeMounts(id, kind, mounts) {
      const expected = posix.join(opts.dataRoot, VOLUME_LAYOUT[kind].hostDir, id);
      for (const m of mounts) {
        if (m.source !== expected) {
          log.error(
            { id, kind, source: m.source, expected },
            'vol-mgr answered a mount source outside its volume dir: refused',
          );
          throw new SysboxError(
            'internal',
            `container ${id}: the ${kind} volume's mount source ${m.source} is not ${expected}: refused`,
          );
        }
      }
      return mounts;
    },
    async subids(id, r) {
      try {
        const ranges = readDelegatedRanges(opts.subuidFile, opts.subgidFile);
        assertIdsDelegated(
          { uid: r.uid, gid: r.gid, count: r.size },
          ranges,
          `container ${id}: subid allocation`,
        );
      } catch (err) {
        log.error({ id, reply: r, err }, 'subid-allocator answered a range that is not delegated: refused');
        throw new SysboxError('internal', (err as Error).message, { cause: err });
      }
    },
  };
}
