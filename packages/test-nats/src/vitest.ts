/**
 * The fixture most suites need: a real, authenticated nats-server (JetStream on) for the
 * enclosing `describe` and one connection to it, started before its tests and stopped after.
 * Read `ns` and `nc` inside tests and hooks (they are set once the suite started).
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll } from 'vitest';
import { startNatsServer, type NatsServer, type NatsServerOptions } from './index.js';

export interface NatsFixture {
  readonly ns: NatsServer;
  /** Connected as `operator`. */
  readonly nc: NatsConnection;
}

export function useNatsServer(opts: NatsServerOptions = { jetstream: true }): NatsFixture {
  let ns: NatsServer | undefined;
  let nc: NatsConnection | undefined;
  beforeAll(async () => {
    ns = await startNatsServer(opts);
    nc = await ns.connect();
  });
  afterAll(async () => {
    await nc?.close();
    await ns?.stop();
  });
  return {
    get ns() {
      if (!ns) throw new Error('the nats-server fixture is read before its suite started');
      return ns;
    },
    get nc() {
      if (!nc) throw new Error('the nats-server fixture is read before its suite started');
      return nc;
    },
  };
}
