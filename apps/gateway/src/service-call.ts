/**
 * The gateway's one way to ask a service: the short or long bound, and a failure's message
 * prefixed with the container and what was being done (sysbox-runc shows it as the gRPC status).
 */
import { SysboxError, type Contract, type ReplyOf, type RequestInputOf } from '@sysbox-mgr-ts/contracts';
import type { ServiceClient } from '@sysbox-mgr-ts/service-kit';

export type ServiceCall = <C extends Contract>(
  id: string,
  what: string,
  contract: C,
  payload: RequestInputOf<C>,
  /** Long operations (rsync, chown, clone, prep) get the long bound. */
  long?: boolean,
) => Promise<ReplyOf<C>>;

export function serviceCaller(services: ServiceClient, timeouts: { opMs: number; longOpMs: number }): ServiceCall {
  return async (id, what, contract, payload, long = false) => {
    try {
      return await services.call(contract, payload, { timeoutMs: long ? timeouts.longOpMs : timeouts.opMs });
    } catch (err) {
      const e = SysboxError.from(err);
      throw new SysboxError(e.code, `container ${id}: ${what}: ${e.message}`, { cause: err });
    }
  };
}
