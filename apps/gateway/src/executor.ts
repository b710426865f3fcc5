/**
 * Runs what a plan (plans/*.ts) decided: its service calls in order, each reply folded into the
 * record by the plan's own pure function, and the record saved once per step by the caller
 * (manager.ts). A call the plan marks `warn` may fail: the record then keeps what it says (the
 * removal retries it) and the steps go on.
 */
import { isSysboxError, type Contract, type ReplyOf, type RequestInputOf } from '@sysbox-mgr-ts/contracts';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { ContainerRecord } from './record.js';
import type { CallBound, ServiceCall } from './service-call.js';

/** One service call of a plan, and what its reply makes of the record. */
export interface PlanCall<C extends Contract = Contract> {
  what: string;
  contract: C;
  payload: RequestInputOf<C>;
  bound?: CallBound;
  /** The record after the reply (default: unchanged). */
  apply?: (rec: ContainerRecord, reply: ReplyOf<C>) => ContainerRecord;
  /**
   * On failure: `throw` (default) ends the plan; `warn` logs `warning` and goes on with the record
   * unchanged; `exists-ok` takes already-exists for done (`apply` runs without a reply).
   */
  onError?: 'throw' | 'warn' | 'exists-ok';
  /** The warning of a `warn` call that failed. */
  warning?: string;
}

/** A plan call, typed by its contract (plans build arrays of calls to different services). */
export function planCall<C extends Contract>(
  what: string,
  contract: C,
  payload: RequestInputOf<C>,
  opts: Omit<PlanCall<C>, 'what' | 'contract' | 'payload'> = {},
): PlanCall {
  return { what, contract, payload, ...opts } as unknown as PlanCall;
}

export interface Executor {
  /** Asks one service for the container. */
  call: ServiceCall;
  /** Runs `calls` in order over `rec`; answers the record after them. */
  run(rec: ContainerRecord, calls: readonly (PlanCall | false | undefined)[]): Promise<ContainerRecord>;
}

export function createExecutor(call: ServiceCall, log: Logger): Executor {
  return {
    call,
    async run(rec, calls) {
      let cur = rec;
      for (const c of calls) {
        if (!c) continue;
        let reply: unknown;
        try {
          reply = await call(rec.id, c.what, c.contract, c.payload as never, c.bound);
        } catch (err) {
          if (c.onError === 'exists-ok' && isSysboxError(err, 'already-exists')) reply = undefined;
          else if (c.onError === 'warn') {
            log.warn({ id: rec.id, err }, c.warning ?? `${c.what} failed`);
            continue;
          } else throw err;
        }
        if (c.apply) cur = c.apply(cur, reply as never);
      }
      return cur;
    },
  };
}
