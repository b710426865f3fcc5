import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNatsServer, type NatsServer } from './index.js';

/** A raw INFO read proves a real server listens, without any client library. */
function readInfo(port: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    s.once('data', (b) => {
      s.destroy();
      resolve(JSON.parse(b.toString().replace(/^INFO /, '')));
    });
    s.once('error', reject);
  });
}

describe('startNatsServer', () => {
  let ns: NatsServer;
  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true });
  });
  afterAll(async () => {
    await ns?.stop();
  });

  it('listens on a free loopback port with JetStream', async () => {
    expect(ns.port).toBeGreaterThan(0);
    expect(ns.url).toBe(`nats://127.0.0.1:${ns.port}`);
    const info = await readInfo(ns.port);
    expect(info.jetstream).toBe(true);
  });

  it('restarts on the same port', async () => {
    const port = ns.port;
    const pid = ns.pid;
    await ns.restart();
    expect(ns.port).toBe(port);
    expect(ns.pid).not.toBe(pid);
    expect((await readInfo(port)).jetstream).toBe(true);
  });
});
