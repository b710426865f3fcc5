/**
 * Running under systemd: a daemon started from its bin with NOTIFY_SOCKET tells the supervisor
 * READY=1 only once it answers `$SRV.PING`, and STOPPING=1 when SIGTERM starts its stop (the
 * socket is a real unix datagram socket bound here, as systemd binds its own); and the units in
 * deploy/systemd pass `systemd-analyze verify`.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenDatagram } from '@sysbox-mgr-ts/host-native';
import { isInstalled, run, startProcess } from '@sysbox-mgr-ts/exec';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_NAMES, repoRoot, startSystem, type System } from './harness.js';

const unitDir = join(repoRoot, 'deploy', 'systemd');
const DAEMONS = {
  'sysbox-subid-allocator': 'subid-allocator',
  'sysbox-vol-mgr': 'vol-mgr',
  'sysbox-shiftfs-mgr': 'shiftfs-mgr',
  'sysbox-rootfs-cloner': 'rootfs-cloner',
  'sysbox-gateway': 'gateway',
} as const;

describe('sd_notify from a daemon bin (Type=notify)', () => {
  let sys: System;
  beforeAll(async () => {
    sys = await startSystem({ apps: [] });
  });
  afterAll(async () => {
    await sys?.stop();
  });

  it('READY=1 comes from the daemon pid once it answers $SRV.PING; STOPPING=1 when SIGTERM starts the stop; exit 0', async () => {
    const listener = listenDatagram(join(sys.dir, 'notify.sock'));
    const logFile = join(sys.dir, 'logs', 'shiftfs-mgr.notify.log');
    const args = [
      '--nats-url',
      sys.nats.url,
      '--nats-creds',
      sys.nats.credentials('shiftfs-mgr'),
      '--node',
      sys.node,
      '--data-root',
      sys.dataRoot,
      '--log-level',
      'debug',
      '--no-modprobe',
    ];
    const proc = startProcess(join(repoRoot, 'apps/shiftfs-mgr/bin/sysbox-shiftfs-mgr.js'), args, {
      env: { NOTIFY_SOCKET: listener.path },
      output: { file: logFile },
    });
    const ping = async (): Promise<boolean> =>
      sys.nc.request(`$SRV.PING.${SERVICE_NAMES['shiftfs-mgr']}`, '', { timeout: 500 }).then(
        () => true,
        () => false,
      );
    try {
      const started = performance.now();
      let ready: { message: string; pid: number } | undefined;
      while (!ready) {
        if (performance.now() - started > 20_000)
          throw new Error(`no READY=1 in 20 s:\n${readFileSync(logFile, 'utf8')}`);
        if (proc.exitCode !== null) throw new Error(`shiftfs-mgr exited:\n${readFileSync(logFile, 'utf8')}`);
        ready = listener.drain()[0];
        if (!ready) await new Promise((r) => setTimeout(r, 5));
      }
      const readyMs = performance.now() - started;
      // The moment the supervisor hears READY=1, the service answers on the first try.
      expect(ready).toEqual({ message: 'READY=1', pid: proc.pid });
      expect(await ping()).toBe(true);
      expect(readFileSync(logFile, 'utf8')).toMatch(
        /"msg":"started"[^\n]*\n[\s\S]*"msg":"sd_notify READY=1"/,
      );
      console.log(`READY=1 ${readyMs.toFixed(0)} ms after spawn`);

      proc.kill('SIGTERM');
      expect(await listener.next(5000)).toEqual({ message: 'STOPPING=1', pid: proc.pid });
      expect((await proc).exitCode).toBe(0);
      expect(listener.drain()).toEqual([]);
      expect(readFileSync(logFile, 'utf8')).toMatch(
        /"msg":"stopping"[\s\S]*"msg":"sd_notify STOPPING=1"[\s\S]*"msg":"stopped"/,
      );
    } finally {
      if (proc.exitCode === null) {
        proc.kill('SIGKILL');
        await proc;
      }
      listener.close();
    }
  });
});

/** `Key=value` lines of a unit file, by key (a key may repeat). */
function unitKeys(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe('deploy/systemd units', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sysbox-units-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('has the nats-server unit and one Type=notify unit per daemon, in the host mount namespace', () => {
    expect(
      readdirSync(unitDir)
        .filter((f) => f.endsWith('.service'))
        .sort(),
    ).toEqual(['sysbox-nats', 'sysbox-mgr', ...Object.keys(DAEMONS)].map((u) => `${u}.service`).sort());
    const nats = unitKeys(readFileSync(join(unitDir, 'sysbox-nats.service'), 'utf8'));
    expect(nats.get('ExecStart')).toEqual(['nats-server -c /etc/sysbox-mgr-ts/nats/nats-server.conf']);
    for (const unit of Object.keys(DAEMONS)) {
      const k = unitKeys(readFileSync(join(unitDir, `${unit}.service`), 'utf8'));
      expect(k.get('Type'), unit).toEqual(['notify']);
      expect(k.get('NotifyAccess'), unit).toEqual(['main']);
      expect(k.get('Restart'), unit).toEqual(['on-failure']);
      expect(k.get('RestartSec'), unit).toEqual(['1']);
      expect(k.get('Requires'), unit).toEqual(
        unit === 'sysbox-gateway'
          ? ['sysbox-nats.service', 'sysbox-gateway.socket']
          : ['sysbox-nats.service'],
      );
      expect(k.get('After')?.[0]?.split(' '), unit).toContain('sysbox-nats.service');
      expect(k.get('ExecStart'), unit).toEqual([`/usr/local/bin/${unit}`]);
      expect(k.get('NoNewPrivileges'), unit).toEqual(['yes']);
      // Any of these gives the service its own mount namespace: its mounts would be invisible to
      // sysbox-runc, and /home or /tmp bind sources unreachable.
      for (const ns of [
        'ProtectSystem',
        'ProtectHome',
        'PrivateTmp',
        'PrivateDevices',
        'ReadWritePaths',
        'ReadOnlyPaths',
        'InaccessiblePaths',
        'PrivateMounts',
      ]) {
        expect(k.has(ns), `${unit} sets ${ns}`).toBe(false);
      }
    }
  });

  it("holds the gateway's socket in a socket unit, and has a sysbox-mgr.service that starts the set for sysbox.service", () => {
    const sock = unitKeys(readFileSync(join(unitDir, 'sysbox-gateway.socket'), 'utf8'));
    // The path sysbox-runc calls and the gateway's default --socket, 0600 as the gateway makes it.
    expect(sock.get('ListenStream')).toEqual(['/run/sysbox/sysmgr.sock']);
    expect(sock.get('SocketMode')).toEqual(['0600']);
    expect(sock.get('Accept') ?? ['no']).toEqual(['no']);
    const gw = unitKeys(readFileSync(join(unitDir, 'sysbox-gateway.service'), 'utf8'));
    expect(gw.get('After')?.[0]?.split(' ')).toContain('sysbox-gateway.socket');
    // Upstream's sysbox.service BindsTo= sysbox-mgr.service; ours is part of it and pulls in the set.
    const mgr = unitKeys(readFileSync(join(unitDir, 'sysbox-mgr.service'), 'utf8'));
    expect(mgr.get('PartOf')).toEqual(['sysbox.service']);
    expect(mgr.get('WantedBy')).toEqual(['sysbox.service']);
    const set = [
      'sysbox-nats.service',
      ...Object.keys(DAEMONS).map((u) => `${u}.service`),
      'sysbox-gateway.socket',
    ];
    expect(mgr.get('Wants')?.[0]?.split(' ').sort()).toEqual([...set].sort());
    expect(mgr.get('After')?.[0]?.split(' ').sort()).toEqual([...set].sort());
    // Requires= would carry a daemon's restart through sysbox.service's BindsTo= to sysbox-fs.
    expect(mgr.has('Requires')).toBe(false);
    expect(mgr.has('BindsTo')).toBe(false);
  });

  it('pass systemd-analyze verify (daemon bins pointed at this checkout)', async (ctx) => {
    if (!(await isInstalled('systemd-analyze'))) {
      console.log('skipped: systemd-analyze is not installed (Debian: apt-get install systemd)');
      ctx.skip();
    }
    // A trivial unit first: where verify itself cannot run (no systemd state), skip and say why.
    const probe = join(dir, 'sysbox-probe.service');
    writeFileSync(probe, '[Service]\nType=oneshot\nExecStart=/bin/true\n');
    const p = await run('systemd-analyze', ['verify', probe], { timeout: 60_000, okExitCodes: [1] });
    if (p.exitCode !== 0 || p.stderr.trim()) {
      console.log(
        `skipped: systemd-analyze verify does not work in this VM: ${p.stderr.trim() || `exit ${p.exitCode}`}`,
      );
      ctx.skip();
    }
    rmSync(probe);
    const files: string[] = [];
    for (const f of readdirSync(unitDir).filter((x) => x.endsWith('.service') || x.endsWith('.socket'))) {
      let text = readFileSync(join(unitDir, f), 'utf8');
      const unit = f.replace(/\.(service|socket)$/, '');
      if (unit in DAEMONS) {
        // The units name the installed bins; verify checks the command exists, so point it at this checkout's.
        const app = DAEMONS[unit as keyof typeof DAEMONS];
        text = text.replaceAll(`/usr/local/bin/${unit}`, join(repoRoot, 'apps', app, 'bin', `${unit}.js`));
      }
      writeFileSync(join(dir, f), text);
      files.push(join(dir, f));
    }
    const r = await run('systemd-analyze', ['verify', ...files], { timeout: 60_000, okExitCodes: [1] });
    console.log(
      `systemd-analyze verify of ${files.length} units: exit ${r.exitCode}${r.stderr ? `\n${r.stderr}` : ', no findings'}`,
    );
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
  });
});
