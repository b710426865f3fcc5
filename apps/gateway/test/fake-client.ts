/**
 * A ServiceClient without a network, for unit tests: each call is recorded as
 * `<service>.<endpoint>` with its payload and answered by the handler of that name (a handler may
 * throw a SysboxError); a call with no handler answers `{}`.
 */
import type { Contract } from '@sysbox-mgr-ts/contracts';
import type { ServiceClient } from '@sysbox-mgr-ts/service-kit';

export type FakeHandler = (payload: any) => unknown;

export interface FakeClient extends ServiceClient {
  calls: { op: string; req: any }[];
  ops(): string[];
  /** Replaces (or adds) the handler of an op. */
  on(op: string, handler: FakeHandler): void;
}

export function fakeClient(handlers: Record<string, FakeHandler> = {}): FakeClient {
  const calls: { op: string; req: any }[] = [];
  return {
    node: 'n1',
    calls,
    ops: () => calls.map((c) => c.op),
    on(op, handler) {
      handlers[op] = handler;
    },
    async call(contract: Contract, payload: any): Promise<any> {
      const op = `${contract.service}.${contract.endpoint}`;
      calls.push({ op, req: payload });
      const handler = handlers[op];
      return handler ? handler(payload) : {};
    },
  };
}
