/**
 * The gateway's one way to ask a service: the short or long bound, and a failure's message
 * prefixed with the container and what was being done (sysbox-runc shows it as the gRPC status).
 */
import {
  SysboxError,
  limitMs,
  type Contract,
  type ReplyOf,
  type RequestInputOf,
} from '@sysbox-mgr-ts/contracts';
import type { ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { RPC_TIME_LIMITS } from './rpc-limits.js';
import type { RpcName } from './wire.js';

/**
 * How long a call may take: false, the short bound (--op-timeout-ms); an RPC's name, as long as
 * that RPC may run (rpc-limits.ts: the long work done while serving sysbox-runc); true, the long
 * bound of background work no client waits for (removal, orphans: --long-op-timeout-ms).
 */
export type CallBound = boolean | RpcName;

export type ServiceCall = <C extends Contract>(
  id: string,
  what: string,
  contract: C,
  payload: RequestInputOf<C>,
  /** false: short; an RPC's name: that RPC's limit; true: the background bound. */
  bound?: CallBound,
) => Promise<ReplyOf<C>>;

export function serviceCaller(
  services: ServiceClient,
  timeouts: { opMs: number; longOpMs: number },
): ServiceCall {
  return async (id, what, contract, payload, bound = false) => {
    const timeoutMs =
      typeof bound === 'string' ? limitMs(RPC_TIME_LIMITS[bound]) : bound ? timeouts.longOpMs : timeouts.opMs;
    try {
      return await services.call(contract, payload, { timeoutMs });
    } catch (err) {
      const e = SysboxError.from(err);
      throw new SysboxError(e.code, `container ${id}: ${what}: ${e.message}`, { cause: err });
    }
  };
}
