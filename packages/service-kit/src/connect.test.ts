import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { connectNats } from './daemon.js';
import { silentLogger } from './logger.js';

describe('connectNats', () => {
  let ns: NatsServer;
  let dir: string;
  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: false });
    dir = mkdtempSync(join(tmpdir(), 'kit-creds-'));
  });
  afterAll(async () => {
    await ns?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects as its identity with an owner-only credentials file, replies under its own inbox', async () => {
    const nc = await connectNats({ natsUrl: ns.url, natsCreds: ns.credentials('gateway') }, 'gateway', 'test', silentLogger());
    // The gateway may subscribe only under _INBOX_gateway: a 503 coming back proves replies arrive there.
    await expect(nc.request('$SRV.PING', '', { timeout: 2000 })).rejects.toThrow(/no responders/i);
    await nc.close();
  });

  it('refuses a credentials file that group or others can read, before connecting', async () => {
    const file = join(dir, 'gateway.nk');
    copyFileSync(ns.credentials('gateway'), file);
    chmodSync(file, 0o644);
    await expect(connectNats({ natsUrl: ns.url, natsCreds: file }, 'gateway', 'test', silentLogger())).rejects.toThrow(
      /open to group or others \(mode 0644\)/,
    );
  });

  it('without credentials, the authenticated server refuses the connection', async () => {
    await expect(
      connectNats({ natsUrl: ns.url, natsCreds: 'none' }, 'gateway', 'test', silentLogger()).then((nc) => nc.close()),
    ).rejects.toThrow(/Authorization Violation/);
  });

  it('a missing default credentials file is an error that names it', async () => {
    await expect(connectNats({ natsUrl: ns.url, natsCreds: join(dir, 'absent.nk') }, 'gateway', 'test', silentLogger())).rejects.toThrow(/absent\.nk/);
  });
});
