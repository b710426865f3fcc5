import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { SysboxError, defineContract, subjectOf } from '@sysbox-mgr-ts/contracts';
import { z } from 'zod';
import { createServiceClient } from './client.js';
import { connectNats } from './daemon.js';
import { silentLogger } from './logger.js';
import { errorReply } from './wire.js';

describe('connectNats', () => {
  const nats = useNatsServer({ jetstream: false });
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kit-creds-'));
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects as its identity with an owner-only credentials file, replies under its own inbox', async () => {
    const nc = await connectNats(
      { natsUrl: nats.ns.url, natsCreds: nats.ns.credentials('gateway') },
      'gateway',
      'test',
      silentLogger(),
    );
    // The gateway may subscribe only under _INBOX_gateway: a 503 coming back proves replies arrive there.
    await expect(nc.request('$SRV.PING', '', { timeout: 2000 })).rejects.toThrow(/no responders/i);
    await nc.close();
  });

  it('refuses a credentials file that group or others can read, before connecting', async () => {
    const file = join(dir, 'gateway.nk');
    copyFileSync(nats.ns.credentials('gateway'), file);
    chmodSync(file, 0o644);
    await expect(
      connectNats({ natsUrl: nats.ns.url, natsCreds: file }, 'gateway', 'test', silentLogger()),
    ).rejects.toThrow(/open to group or others \(mode 0644\)/);
  });

  it('without credentials, the authenticated server refuses the connection', async () => {
    await expect(
      connectNats({ natsUrl: nats.ns.url, natsCreds: 'none' }, 'gateway', 'test', silentLogger()).then((nc) =>
        nc.close(),
      ),
    ).rejects.toThrow(/Authorization Violation/);
  });

  it('a missing default credentials file is an error that names it', async () => {
    await expect(
      connectNats(
        { natsUrl: nats.ns.url, natsCreds: join(dir, 'absent.nk') },
        'gateway',
        'test',
        silentLogger(),
      ),
    ).rejects.toThrow(/absent\.nk/);
  });
});

describe('a reply lost to a reconnect', () => {
  const nats = useNatsServer({ jetstream: false });

  const contract = (idempotent: boolean) =>
    defineContract({
      service: 'subid',
      endpoint: idempotent ? 'again' : 'once',
      subject: subjectOf('subid', idempotent ? 'again' : 'once'),
      description: 'answers the second request only, as if the first answer was lost',
      request: z.object({}),
      reply: z.object({ answer: z.number() }),
      errors: [],
      idempotent,
    });

  /** A responder that drops the first request it gets and answers later ones. */
  async function responder(subject: string): Promise<{ seen: () => number; close: () => Promise<void> }> {
    const nc = await nats.ns.connect();
    let seen = 0;
    nc.subscribe(subject, {
      callback: (_e, m) => void (++seen > 1 && m.respond(JSON.stringify({ answer: seen }))),
    });
    await nc.flush();
    return { seen: () => seen, close: () => nc.close() };
  }

  it('sends an idempotent request again when the connection comes back, instead of waiting out its bound', async () => {
    const r = await responder('sysbox.n1.subid.again');
    const nc = await nats.ns.connect('operator', { reconnectTimeWait: 50 });
    const client = createServiceClient(nc, { node: 'n1', timeoutMs: 20_000 });
    const call = client.call(contract(true), {});
    // The first copy reached the responder (which drops it) before the connection goes.
    await vi.waitFor(() => expect(r.seen()).toBe(1));
    await nc.reconnect();
    // The second copy answered: the request was sent again, not left to wait out its 20 s bound
    // (which would also outlast this test's own time-out).
    expect(await call).toEqual({ answer: 2 });
    expect(r.seen()).toBe(2);
    await nc.close();
    await r.close();
  });

  it("sends an idempotent request again when no reply came (the service's own server lost it), with no reconnect here", async () => {
    const r = await responder('sysbox.n1.subid.again');
    const nc = await nats.ns.connect('operator');
    const client = createServiceClient(nc, { node: 'n1', timeoutMs: 20_000, resendAfterMs: 200 });
    expect(await client.call(contract(true), {})).toEqual({ answer: 2 });
    expect(r.seen()).toBe(2);
    await nc.close();
    await r.close();
  });

  it("a repeat's error does not cut short the first request, still at work", async () => {
    const nc = await nats.ns.connect();
    let seen = 0;
    // The first request is slow and succeeds; a repeat (another replica seeing the work half done) fails at once.
    nc.subscribe('sysbox.n1.subid.again', {
      callback: (_e, m) => {
        if (++seen === 1) setTimeout(() => m.respond(JSON.stringify({ answer: 1 })), 700);
        else {
          const e = errorReply(new SysboxError('already-exists', 'half done'));
          m.respond(e.data, { headers: e.headers });
        }
      },
    });
    await nc.flush();
    const caller = await nats.ns.connect('operator');
    const client = createServiceClient(caller, { node: 'n1', timeoutMs: 20_000, resendAfterMs: 100 });
    expect(await client.call(contract(true), {})).toEqual({ answer: 1 });
    expect(seen).toBeGreaterThan(1);
    await caller.close();
    await nc.close();
  });

  it("a first request lost with its service is answered by a repeat's error, not left to wait out its bound", async () => {
    const nc = await nats.ns.connect();
    let seen = 0;
    // The first request is never answered (its service was killed mid-call); the restarted
    // service answers every repeat with not-found.
    nc.subscribe('sysbox.n1.subid.again', {
      callback: (_e, m) => {
        if (++seen === 1) return;
        const e = errorReply(new SysboxError('not-found', 'no such container'));
        m.respond(e.data, { headers: e.headers });
      },
    });
    await nc.flush();
    const caller = await nats.ns.connect('operator');
    // A 60 s bound, past this test's own time-out: only the lost-first rule ends the call.
    const client = createServiceClient(caller, {
      node: 'n1',
      timeoutMs: 60_000,
      resendAfterMs: 100,
      firstCopyLostAfterMs: 500,
    });
    await expect(client.call(contract(true), {})).rejects.toMatchObject({ code: 'not-found' });
    expect(seen).toBeGreaterThan(1);
    await caller.close();
    await nc.close();
  });

  it('never sends a non-idempotent request twice', async () => {
    const r = await responder('sysbox.n1.subid.once');
    const nc = await nats.ns.connect('operator', { reconnectTimeWait: 50 });
    const client = createServiceClient(nc, { node: 'n1', timeoutMs: 1500 });
    const call = client.call(contract(false), {});
    // The first copy reached the responder (which drops it) before the connection goes.
    await vi.waitFor(() => expect(r.seen()).toBe(1));
    await nc.reconnect();
    await expect(call).rejects.toMatchObject({ code: 'timeout' });
    expect(r.seen()).toBe(1);
    await nc.close();
    await r.close();
  });
});
