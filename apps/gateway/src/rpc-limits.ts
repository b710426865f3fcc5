/**
 * How long the gateway lets each RPC sysbox-runc makes run, decided here and nowhere else: the
 * handler's bound (grpc-server.ts), the bound of the long service calls made while serving it
 * (service-call.ts: chown, rsync, clone), and the limit handed to vol-mgr for its rsync (the
 * requests' timeLimit), so no work sysbox-runc still waits for is cut short.
 *
 * sysbox-ipc's client (sysboxMgrGrpc/grpcClient.go) gives every call a 10 min deadline
 * (grpcTimeout), except ReqMounts, which it never cuts (a sync-in of a preloaded inner image takes
 * as long as it takes). Each bound here is at least the client's: a minute more where it has one,
 * so work running when the client gives up still finishes, for the retry to adopt; none where it
 * has none. rpc-limits.test.ts holds the client's numbers and checks every entry against them.
 */
import type { TimeLimit } from '@sysbox-mgr-ts/contracts';
import type { RpcName } from './wire.js';

/** The client's 10 min and one more. */
const BEYOND_CLIENT_DEADLINE_MS = 11 * 60_000;

export const RPC_TIME_LIMITS: Readonly<Record<RpcName, TimeLimit>> = {
  Register: BEYOND_CLIENT_DEADLINE_MS,
  Update: BEYOND_CLIENT_DEADLINE_MS,
  Unregister: BEYOND_CLIENT_DEADLINE_MS,
  SubidAlloc: BEYOND_CLIENT_DEADLINE_MS,
  PrepMounts: BEYOND_CLIENT_DEADLINE_MS,
  ReqMounts: 'unbounded',
  ReqShiftfsMark: BEYOND_CLIENT_DEADLINE_MS,
  ReqFsState: BEYOND_CLIENT_DEADLINE_MS,
  Pause: BEYOND_CLIENT_DEADLINE_MS,
  Resume: BEYOND_CLIENT_DEADLINE_MS,
  ReqCloneRootfs: BEYOND_CLIENT_DEADLINE_MS,
  ChownClonedRootfs: BEYOND_CLIENT_DEADLINE_MS,
  RevertClonedRootfsChown: BEYOND_CLIENT_DEADLINE_MS,
};
