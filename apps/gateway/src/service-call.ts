/**
 * The gateway's one way to ask a service: the short or long bound, and a failure's message
 * prefixed with the container and what was being done (sysbox-runc shows it as the gRPC status).
 */
import { SysboxError, type Contract, type ReplyOf, type RequestInputOf } from '@sysbox-mgr-ts/contracts';
import type { ServiceClient } from '@sysbox-mgr-ts/service-kit';

/**
 * How long a call may take: short, long (rsync, chown, clone, prep), or unbounded for what
 * sysbox-runc itself does not bound (ReqMounts' sync-in of an inner image can take many minutes;
 * upstream's client waits as long as it takes).
 */
export type CallBound = boolean | 'unbounded';

/** NATS requests need some bound: a day stands for none. */
const UNBOUNDED_MS = 24 * 3600 * 1000;

export type ServiceCall = <C extends Contract>(
  id: string,
  what: string,
  contract: C,
  payload: RequestInputOf<C>,
  /** true: the long bound; 'unbounded': none. */
  bound?: CallBound,
) => Promise<ReplyOf<C>>;

export function serviceCaller(
  services: ServiceClient,
  timeouts: { opMs: number; longOpMs: number },
): ServiceCall {
  return async (id, what, contract, payload, bound = false) => {
    const timeoutMs = bound === 'unbounded' ? UNBOUNDED_MS : bound ? timeouts.longOpMs : timeouts.opMs;
    try {
      return await services.call(contract, payload, { timeoutMs });
    } catch (err) {
      const e = SysboxError.from(err);
      throw new SysboxError(e.code, `container ${id}: ${what}: ${e.message}`, { cause: err });
    }
  };
}
