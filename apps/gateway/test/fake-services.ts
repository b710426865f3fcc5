/**
 * In-memory stand-ins for subid-allocator, vol-mgr, shiftfs-mgr and rootfs-cloner, served over
 * real NATS through service-kit, recording every call. For the gateway's tests and bench only:
 * the real services are exercised in e2e/.
 */
import { posix } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  SysboxError,
  VOLUME_KINDS,
  VOLUME_LAYOUT,
  rootfsChownClone,
  rootfsContainerStopped,
  rootfsCreateClone,
  rootfsList,
  rootfsSummary,
  rootfsRemoveAll,
  rootfsRemoveClone,
  rootfsRevertChown,
  rootfsRevertUpper,
  rootfsService,
  rootfsShiftUpper,
  shiftfsList,
  shiftfsSummary,
  shiftfsMark,
  shiftfsService,
  shiftfsUnmark,
  shiftfsUnmarkAll,
  subidAlloc,
  subidFree,
  subidList,
  subidSummary,
  subidService,
  volByKind,
  volList,
  volSummary,
  volPrep,
  volRevertPrep,
  volService,
  type Contract,
} from '@sysbox-mgr-ts/contracts';
import { handle, serve, type Binding, type Logger, type MicroService } from '@sysbox-mgr-ts/service-kit';

export type FakeServiceName = 'subid' | 'vol' | 'shiftfs' | 'rootfs';

export interface RecordedCall {
  /** `<service>.<endpoint>`, e.g. `vol.docker-create`. */
  op: string;
  req: Record<string, unknown>;
}

export interface FakeServices {
  calls: RecordedCall[];
  ops(): string[];
  stop(name: FakeServiceName): Promise<void>;
  /** Serves it again (a restarted daemon). */
  start(name: FakeServiceName): void;
  stopAll(): Promise<void>;
}

export interface FakeOptions {
  only?: FakeServiceName[];
  shiftfsSupported?: boolean;
  /** The original overlay workdir rootfs-cloner reports for a rootfs. */
  origWorkDirOf?: (origRootfs: string) => string;
}

export function startFakeServices(
  nc: NatsConnection,
  node: string,
  log: Logger,
  opts: FakeOptions = {},
): FakeServices {
  const calls: RecordedCall[] = [];
  const rec = <C extends Contract>(contract: C, fn: (req: any) => unknown): Binding =>
    handle(contract, async (req) => {
      calls.push({ op: `${contract.service}.${contract.endpoint}`, req: req as Record<string, unknown> });
      return (await fn(req)) as never;
    });

  const ranges = new Map<string, { base: number; size: number; allocatedAt: string }>();
  const clones = new Map<string, string>();

  const bindings: Record<FakeServiceName, Binding[]> = {
    subid: [
      rec(subidAlloc, (r: { id: string; size: number }) => {
        if (r.size === 0 || r.size > 2 ** 32) throw new SysboxError('invalid-size', `size ${r.size}`);
        if (!ranges.has(r.id))
          ranges.set(r.id, {
            base: 165536 + ranges.size * 65536,
            size: r.size,
            allocatedAt: new Date().toISOString(),
          });
        const { base, size } = ranges.get(r.id)!;
        return { uid: base, gid: base, size };
      }),
      rec(subidFree, (r: { id: string }) => {
        if (!ranges.delete(r.id)) throw new SysboxError('not-found', `no range for ${r.id}`);
        return {};
      }),
      rec(subidList, () => ({
        mode: 'exclusive',
        pool: { uid: 165536, gid: 165536, size: 2 ** 24 },
        allocations: [...ranges].map(([id, r]) => ({
          id,
          uid: r.base,
          gid: r.base,
          size: r.size,
          allocatedAt: r.allocatedAt,
        })),
      })),
      rec(subidSummary, () => ({
        mode: 'exclusive',
        pool: { uid: 165536, gid: 165536, size: 2 ** 24 },
        allocations: ranges.size,
      })),
    ],
    vol: [
      ...VOLUME_KINDS.flatMap((kind) => [
        rec(volByKind[kind].create, (r: { id: string; mountpoint: string }) => ({
          mounts: [
            {
              destination: r.mountpoint,
              source: posix.join('/var/lib/sysbox', VOLUME_LAYOUT[kind].hostDir, r.id),
              type: 'bind',
              options: ['rbind', 'rprivate'],
            },
          ],
        })),
        rec(volByKind[kind].destroy, () => ({})),
        rec(volByKind[kind].syncOut, () => ({})),
        rec(volByKind[kind].syncOutAndDestroyAll, () => ({ destroyed: [], failures: [] })),
      ]),
      rec(volPrep, (r: { sources: { source: string }[] }) => ({
        prepared: r.sources.map((s) => s.source),
        skipped: [],
      })),
      rec(volRevertPrep, () => ({ reverted: [] })),
      rec(volList, () => ({ volumes: [], preps: [] })),
      rec(volSummary, () => ({ volumes: Object.fromEntries(VOLUME_KINDS.map((k) => [k, 0])), preps: 0 })),
    ],
    shiftfs: [
      rec(shiftfsMark, (r: { mounts: { source: string; readonly: boolean }[] }) => {
        if (!opts.shiftfsSupported) throw new SysboxError('unsupported', 'shiftfs is not in this kernel');
        return { mounts: r.mounts };
      }),
      rec(shiftfsUnmark, () => ({})),
      rec(shiftfsUnmarkAll, () => ({ unmarked: [], failures: [] })),
      rec(shiftfsList, () => ({ supported: opts.shiftfsSupported ?? false, marks: [] })),
      rec(shiftfsSummary, () => ({
        supported: opts.shiftfsSupported ?? false,
        supportedOnOverlayfs: false,
        marks: 0,
      })),
    ],
    rootfs: [
      rec(rootfsCreateClone, (r: { id: string; origRootfs: string }) => {
        const cloneRootfs = `/var/lib/sysbox/rootfs/${r.id}/overlay2/merged`;
        clones.set(r.id, cloneRootfs);
        return { rootfs: cloneRootfs, origWorkDir: (opts.origWorkDirOf ?? posix.dirname)(r.origRootfs) };
      }),
      rec(rootfsRemoveClone, (r: { id: string }) => {
        if (!clones.delete(r.id)) throw new SysboxError('not-found', `no clone for ${r.id}`);
        return {};
      }),
      rec(rootfsChownClone, () => ({})),
      rec(rootfsRevertChown, () => ({})),
      rec(rootfsContainerStopped, () => ({})),
      rec(rootfsRemoveAll, () => ({ removed: [], failures: [] })),
      rec(rootfsShiftUpper, () => ({})),
      rec(rootfsRevertUpper, () => ({})),
      rec(rootfsList, () => ({ clones: [], uppers: [] })),
      rec(rootfsSummary, () => ({ clones: clones.size, uppers: 0 })),
    ],
  };
  const descriptors = {
    subid: subidService,
    vol: volService,
    shiftfs: shiftfsService,
    rootfs: rootfsService,
  };
  const running = new Map<FakeServiceName, MicroService>();
  for (const name of opts.only ?? (Object.keys(bindings) as FakeServiceName[])) {
    running.set(
      name,
      serve({ nc, service: descriptors[name], node, version: '0.0.0-fake', log, bindings: bindings[name] }),
    );
  }
  return {
    calls,
    ops: () => calls.map((c) => c.op),
    async stop(name) {
      await running.get(name)?.stop();
      running.delete(name);
    },
    start(name) {
      if (!running.has(name))
        running.set(
          name,
          serve({
            nc,
            service: descriptors[name],
            node,
            version: '0.0.0-fake',
            log,
            bindings: bindings[name],
          }),
        );
    },
    async stopAll() {
      for (const name of [...running.keys()]) await this.stop(name);
    },
  };
}
