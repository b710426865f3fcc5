import { UNBOUNDED_MS, volByKind } from '@sysbox-mgr-ts/contracts';
import type { ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { describe, expect, it } from 'vitest';
import { RPC_TIME_LIMITS } from './rpc-limits.js';
import { serviceCaller } from './service-call.js';
import type { RpcName } from './wire.js';

/**
 * The deadline sysbox-ipc's Go client sets on each call, as read in nestybox/sysbox-ipc
 * sysboxMgrGrpc/grpcClient.go (f05151f, 2024-09-21): `var grpcTimeout time.Duration = 10 *
 * time.Minute` (since 74942b3, 2023-02; 40 s before), used as context.WithTimeout(...,
 * grpcTimeout) by every call; ReqMounts alone uses context.WithCancel, no deadline ("the time it
 * takes to setup the mounts can be large"). undefined: the client never gives up.
 */
const TEN_MIN = 10 * 60 * 1000;
const SYSBOX_IPC_CLIENT_DEADLINE_MS: Record<RpcName, number | undefined> = {
  Register: TEN_MIN,
  Update: TEN_MIN,
  Unregister: TEN_MIN,
  SubidAlloc: TEN_MIN,
  ReqMounts: undefined,
  PrepMounts: TEN_MIN,
  ReqShiftfsMark: TEN_MIN,
  ReqFsState: TEN_MIN,
  Pause: TEN_MIN,
  Resume: TEN_MIN,
  ReqCloneRootfs: TEN_MIN,
  ChownClonedRootfs: TEN_MIN,
  RevertClonedRootfsChown: TEN_MIN,
};

// Issue #24: Unregister/Pause sync-out and the clone chown were cut at 540-550 s, below the
// client's 10 min; ReqMounts' sync-in at 30 min where the client waits as long as it takes.
describe("RPC time limits against the deadlines of sysbox-ipc's client", () => {
  it.each(Object.entries(SYSBOX_IPC_CLIENT_DEADLINE_MS))(
    '%s is bounded no shorter than the client waits',
    (rpc, client) => {
      const limit = RPC_TIME_LIMITS[rpc as RpcName];
      if (client === undefined) expect(limit).toBe('unbounded');
      else expect(limit === 'unbounded' || limit >= client).toBe(true);
    },
  );

  it('covers every RPC and no other', () => {
    expect(Object.keys(RPC_TIME_LIMITS).sort()).toEqual(Object.keys(SYSBOX_IPC_CLIENT_DEADLINE_MS).sort());
  });

  it("bounds a service call made for an RPC by that RPC's limit, not the background bound", async () => {
    const seen: number[] = [];
    const services = {
      node: 'n1',
      call: async (_c: unknown, _p: unknown, opts?: { timeoutMs?: number }) => {
        seen.push(opts?.timeoutMs ?? -1);
        return {};
      },
    } as unknown as ServiceClient;
    const call = serviceCaller(services, { opMs: 100, longOpMs: 1000 });
    await call('c1', 'sync-out', volByKind.docker.syncOut, { id: 'c1' }, 'Unregister');
    await call('c1', 'sync-in', volByKind.docker.create, {} as never, 'ReqMounts');
    await call('c1', 'removal', volByKind.docker.destroy, { id: 'c1' }, true);
    await call('c1', 'lookup', volByKind.docker.syncOut, { id: 'c1' });
    expect(seen).toEqual([RPC_TIME_LIMITS.Unregister, UNBOUNDED_MS, 1000, 100]);
    expect(seen[0]).toBeGreaterThanOrEqual(SYSBOX_IPC_CLIENT_DEADLINE_MS.Unregister!);
  });
});
