import { describe, expect, it } from 'vitest';
import { Kvm } from '@nats-io/kv';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { isTransient, retryTransient } from './index.js';

/** The error a promise rejects with. */
const failureOf = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => new Error('did not fail'),
    (err: unknown) => err,
  );

describe('isTransient, on errors a real nats-server produces', () => {
  const nats = useNatsServer();

  it('no responders is transient, whatever the operation', async () => {
    const err = await failureOf(nats.nc.request('sysbox.nobody.here', '', { timeout: 1000 }));
    expect(isTransient(err, { idempotent: false })).toBe(true);
  });

  it('a time-out is transient only for an operation that may run twice', async () => {
    nats.nc.subscribe('sysbox.silent', { callback: () => undefined });
    const err = await failureOf(nats.nc.request('sysbox.silent', '', { timeout: 50 }));
    expect(isTransient(err, { idempotent: true })).toBe(true);
    expect(isTransient(err, { idempotent: false })).toBe(false);
  });

  it('a permission violation and a CAS conflict are permanent', async () => {
    const monitor = await nats.ns.connect('monitor');
    const denied = await failureOf(monitor.request('sysbox.n1.vol.prep', '{}', { timeout: 1000 }));
    expect(isTransient(denied, { idempotent: true })).toBe(false);
    await monitor.close();
    const kv = await new Kvm(nats.nc).create('retry-test');
    await kv.put('k', 'a');
    const conflict = await failureOf(kv.update('k', 'b', 999));
    expect(isTransient(conflict, { idempotent: true })).toBe(false);
  });

  it('a JetStream request while the server is down and back waits it out within the deadline', async () => {
    const kv = await new Kvm(nats.nc).create('retry-restart', { allow_direct: false });
    await kv.put('k', 'v');
    const restarted = nats.ns.restart();
    const value = await retryTransient(() => kv.get('k'), {
      idempotent: true,
      deadline: Date.now() + 15_000,
    });
    await restarted;
    expect(value?.string()).toBe('v');
  });
});

describe('retryTransient', () => {
  it('stops at the deadline with the last error, and never retries a permanent one', async () => {
    let calls = 0;
    const transient = Object.assign(new Error('503 no responders'), {});
    // Without the deadline it would retry forever and the test would hit its own time-out.
    await expect(
      retryTransient(async () => (calls++, Promise.reject(transient)), {
        idempotent: false,
        deadline: Date.now() + 300,
      }),
    ).rejects.toBe(transient);
    expect(calls).toBeGreaterThan(2);
    calls = 0;
    const permanent = new Error('Permissions Violation for Publish to "x"');
    await expect(
      retryTransient(async () => (calls++, Promise.reject(permanent)), {
        idempotent: true,
        deadline: Date.now() + 5000,
      }),
    ).rejects.toBe(permanent);
    expect(calls).toBe(1);
  });
});
