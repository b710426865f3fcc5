/**
 * The README's first command, `npm run up`: tools/dev-up (the embedded default) starts a
 * nats-server with authentication and the five daemons, each as its own process with its own
 * identity, and nothing else (apps/fleet is a command, not a daemon). They answer: every service
 * over NATS to the read-only monitor, the gateway on its socket. Ctrl-C (SIGINT) stops them all.
 */
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startProcess } from '@sysbox-mgr-ts/exec';
import { connectNats, silentLogger } from '@sysbox-mgr-ts/service-kit';
import { credentialsFile, freePorts } from '@sysbox-mgr-ts/test-nats';
import { afterAll, describe, expect, it } from 'vitest';
import { connectGateway, rpc } from './grpc.js';
import { repoRoot } from './harness.js';
import { until } from './runtime.js';

/** Command lines of `pid`'s children, from /proc. */
function childrenOf(pid: number): string[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
    .trim()
    .split(/\s+/)
    .filter(Boolean);
  return children.map((c) => readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0').join(' ').trim());
}

describe('npm run up: the embedded default', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sysbox-up-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('starts a nats-server and the five daemons, nothing else; all answer; SIGINT stops them all', async () => {
    const [port] = await freePorts(1);
    const socket = join(dir, 'sysmgr.sock');
    const credsDir = join(dir, 'creds');
    for (const f of ['subuid', 'subgid']) writeFileSync(join(dir, f), 'sysbox:100000:6553600\n');
    const up = startProcess(
      'node',
      [
        '--conditions=@sysbox-mgr-ts/source',
        '--import',
        'tsx',
        join(repoRoot, 'tools', 'dev-up', 'dev-up.ts'),
        ...['--node', 'uptest', '--nats-port', String(port), '--creds-dir', credsDir],
        ...['--data-root', join(dir, 'data'), '--state-dir', join(dir, 'state')],
      ],
      {
        cwd: repoRoot,
        // What an operator would set in the daemons' environment instead of /etc and /run.
        env: {
          SYSBOX_MGR_SOCKET: socket,
          SYSBOX_SUBUID_FILE: join(dir, 'subuid'),
          SYSBOX_SUBGID_FILE: join(dir, 'subgid'),
          SYSBOX_SUBID_USER: 'sysbox',
          SYSBOX_MGR_DOCKER_SOCKET: '',
        },
        ownProcessGroup: true,
      },
    );
    let output = '';
    for (const s of [up.stdout, up.stderr]) s?.on('data', (d: Buffer) => void (output += d.toString()));
    const ended = up.then((r) => r);
    let pids: string[] = [];
    try {
      const gateway = connectGateway(socket);
      try {
        // The gateway answers once it has asked every service: a container it does not know.
        await until(
          'the gateway to answer',
          async () =>
            existsSync(socket) &&
            (await rpc(gateway, 'Pause', { id: 'nobody' }, 5000).then(
              () => false,
              (err: { code?: number }) => err.code === status.NOT_FOUND,
            )),
          60_000,
        );
      } finally {
        gateway.close();
      }
      pids = readFileSync(`/proc/${up.pid}/task/${up.pid}/children`, 'utf8').trim().split(/\s+/);

      const monitor = await connectNats(
        { natsUrl: `nats://127.0.0.1:${port}`, natsCreds: credentialsFile(credsDir, 'monitor') },
        'monitor',
        'embedded-default test',
        silentLogger(),
      );
      try {
        // Every service answers discovery (each registered before the gateway could ask it).
        const discovered = async (): Promise<string[]> => {
          const names: string[] = [];
          for await (const m of await monitor.requestMany('$SRV.PING', '', { maxWait: 1000 }))
            names.push(m.json<{ name: string }>().name);
          return names.sort();
        };
        let names: string[] = [];
        await until(
          'every service to answer discovery',
          async () => (names = await discovered()).length >= 4,
          30_000,
        );
        expect(names).toEqual(['sysbox-rootfs', 'sysbox-shiftfs', 'sysbox-subid', 'sysbox-vol']);
      } finally {
        await monitor.close();
      }

      // What dev-up started (a command such as sysbox-fleet would exit at once: its log tells)...
      const started = output
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { msg?: string; app?: string })
        .filter((l) => l.msg === 'app started')
        .map((l) => l.app);
      expect(started.sort()).toEqual([
        'gateway',
        'rootfs-cloner',
        'shiftfs-mgr',
        'subid-allocator',
        'vol-mgr',
      ]);
      // ...and the processes it runs: the server and the five daemons' bins, nothing else.
      const bins = childrenOf(up.pid!).map((cmd) =>
        cmd.includes('nats-server') ? 'nats-server' : (/apps\/([\w-]+)\/bin\//.exec(cmd)?.[1] ?? cmd),
      );
      expect(bins.sort()).toEqual([
        'gateway',
        'nats-server',
        'rootfs-cloner',
        'shiftfs-mgr',
        'subid-allocator',
        'vol-mgr',
      ]);
      up.kill('SIGINT');
      const result = await ended;
      expect([result.exitCode, result.signal]).toEqual([0, undefined]);
      // Every daemon and the server are gone with it.
      expect(pids.filter((p) => existsSync(`/proc/${p}`))).toEqual([]);
    } catch (err) {
      process.stderr.write(output);
      throw err;
    } finally {
      // Each daemon runs in a process group of its own: none may outlive a failed test.
      for (const pid of [up.pid!, ...pids.map(Number)])
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
    }
  });
});
