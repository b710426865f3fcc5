/**
 * runDaemon tells a Type=notify supervisor (NOTIFY_SOCKET) READY=1 once the app is reachable and
 * STOPPING=1 when a stop begins. The daemon runs as a child process (its stop ends the process):
 * a tiny app whose only subscription is `sysbox.<node>.subid.ping`, on a real nats-server, the
 * notify socket a real unix datagram socket bound here (host-native's listenDatagram).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { listenDatagram, type DatagramListener } from '@sysbox-mgr-ts/host-native';
import type { NatsServer } from '@sysbox-mgr-ts/test-nats';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

const pkgDir = resolve(import.meta.dirname, '..');
const node = 'sdtest';
const daemonScript = `
import { defineApp, packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
const app = defineApp({
  name: 'sd-notify-test', identity: 'subid-allocator', about: 'test daemon', options: {},
  async start({ nc, config }) {
    const sub = nc.subscribe('sysbox.' + config.node + '.subid.ping', { callback: (_e, m) => m.respond('pong') });
    return { async stop() { await new Promise((r) => setTimeout(r, 300)); sub.unsubscribe(); } };
  },
});
await runDaemon({ ...app, version: '0.0.0' }, process.argv.slice(process.argv.indexOf('--nats-url')));
`;

interface Child {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function startDaemon(ns: NatsServer, env: Record<string, string>): Child {
  const proc = spawn(
    process.execPath,
    [
      '--conditions=@sysbox-mgr-ts/source',
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      daemonScript,
      '--',
      '--nats-url',
      ns.url,
      '--nats-creds',
      ns.credentials('subid-allocator'),
      '--node',
      node,
      '--log-level',
      'debug',
    ],
    { cwd: pkgDir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, output: () => out, exited };
}

describe('runDaemon and sd_notify', () => {
  const nats = useNatsServer({ jetstream: false });
  let nc: NatsConnection;
  let dir: string;
  beforeAll(async () => {
    nc = await nats.ns.connect('operator');
    dir = mkdtempSync(join(tmpdir(), 'kit-notify-'));
  });
  afterAll(async () => {
    await nc?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends READY=1 once started and answering, STOPPING=1 when SIGTERM starts the stop, from its own pid', async () => {
    const listener: DatagramListener = listenDatagram(join(dir, 'notify.sock'));
    const d = startDaemon(nats.ns, { NOTIFY_SOCKET: listener.path });
    try {
      const ready = await listener.next(20_000);
      expect(ready).toEqual({ message: 'READY=1', pid: d.proc.pid });
      // When the supervisor hears READY=1, the daemon has said started and answers at once.
      expect(d.output()).toMatch(/"msg":"started"/);
      expect(
        new TextDecoder().decode((await nc.request(`sysbox.${node}.subid.ping`, '', { timeout: 1000 })).data),
      ).toBe('pong');

      d.proc.kill('SIGTERM');
      const stopping = await listener.next(5000);
      expect(stopping).toEqual({ message: 'STOPPING=1', pid: d.proc.pid });
      expect(await d.exited).toBe(0);
      // STOPPING=1 went out when the stop began, before the app's own stop had finished.
      const out = d.output();
      expect(out.indexOf('"msg":"sd_notify STOPPING=1"')).toBeGreaterThan(out.indexOf('"msg":"stopping"'));
      expect(out.indexOf('"msg":"sd_notify STOPPING=1"')).toBeLessThan(out.indexOf('"msg":"stopped"'));
      expect(listener.drain()).toEqual([]);
    } finally {
      d.proc.kill('SIGKILL');
      listener.close();
    }
  });

  it('with a NOTIFY_SOCKET nobody binds it warns, still serves and stops cleanly', async () => {
    const env: Record<string, string> = { NOTIFY_SOCKET: join(dir, 'nobody.sock') };
    const d = startDaemon(nats.ns, env);
    try {
      await vi.waitFor(() => expect(d.output()).toMatch(/"msg":"started"/), {
        timeout: 20_000,
        interval: 20,
      });
      await vi.waitFor(() => expect(d.output()).toMatch(/"msg":"sd_notify READY=1 failed"/), {
        timeout: 5_000,
        interval: 20,
      });
      expect(
        new TextDecoder().decode((await nc.request(`sysbox.${node}.subid.ping`, '', { timeout: 1000 })).data),
      ).toBe('pong');
      d.proc.kill('SIGTERM');
      expect(await d.exited).toBe(0);
    } finally {
      d.proc.kill('SIGKILL');
    }
  });
});
