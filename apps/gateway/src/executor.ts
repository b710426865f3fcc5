/**
 * Runs what a plan (plans/*.ts) decided: its service calls in order, each reply folded into the
 * record by the plan's own pure function, and the record saved once per step. A call the plan
 * marks `warn` may fail: the record then keeps what it says (the removal retries it) and the
 * steps go on. The RPCs' table writes all go through here (manager.ts says when a step ends).
 */
import { isSysboxError, type Contract, type ReplyOf, type RequestInputOf } from '@sysbox-mgr-ts/contracts';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import type { ContainerRecord, ContainerState } from './record.js';
import type { CallBound, ServiceCall } from './service-call.js';
import type { ContainerTable } from './table.js';

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

type Calls = readonly (PlanCall | false | undefined)[];

export interface Executor {
  /** Asks one service for the container. */
  call: ServiceCall;
  /** Runs `calls` in order over `rec`; answers the record after them, unsaved. */
  run(rec: ContainerRecord, calls: Calls): Promise<ContainerRecord>;
  /**
   * One step: runs `calls` over `rec`, then saves the record once if they changed it (or
   * `changed`: the plan changed it before the calls), unless its state moved from `expect`.
   */
  step(
    rec: ContainerRecord,
    calls: Calls,
    opts?: { changed?: boolean; expect?: ContainerState },
  ): Promise<ContainerRecord>;
  /** Writes a record a plan made without a call (an intent, a stop). */
  save: ContainerTable['save'];
  /** Writes a new container's record (`already-exists` when the id has one). */
  create: ContainerTable['create'];
}

export function createExecutor(
  call: ServiceCall,
  table: Pick<ContainerTable, 'save' | 'create'>,
  log: Logger,
): Executor {
  const exec: Executor = {
    call,
    save: (rec, expect) => table.save(rec, expect),
    create: (rec) => table.create(rec),
    async step(rec, calls, opts = {}) {
      const next = await exec.run(rec, calls);
      if (opts.changed || next !== rec) await table.save(next, opts.expect);
      return next;
    },
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
  return exec;
}
