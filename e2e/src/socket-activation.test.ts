/**
 * Socket activation: a supervisor holds the gateway's listening socket (as systemd's
 * sysbox-gateway.socket does) and hands it to each gateway it starts at fd 3 with LISTEN_FDS=1 and
 * LISTEN_PID. The gateway is SIGKILLed between calls and right after a call was sent; the
 * supervisor starts it again after 1 s (RestartSec=1, as the unit); calls made meanwhile wait in
 * the kernel's queue on the held socket and are answered by the next gateway.
 *
 * The supervisor is a few lines of Python standing in for systemd (PID 1 here is no systemd, and a
 * Node process cannot hold a listening socket without accepting on it): bind, listen, dup to fd 3,
 * then start the command through `sh -c 'LISTEN_PID=$$ ... exec "$@"'` so LISTEN_PID is the
 * gateway's own pid, and again whenever it exits.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { startProcess } from '@sysbox-mgr-ts/exec';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, rpc, statusOf } from './grpc.js';
import { binOf, sleep, startSystem, type System } from './harness.js';

const SUPERVISOR = `
import os, signal, socket, subprocess, sys, time
path, restart_sec, log, *cmd = sys.argv[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o600)
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
child = None
stopping = False
def term(*_):
    global stopping
    stopping = True
    if child: child.terminate()
signal.signal(signal.SIGTERM, term)
while not stopping:
    with open(log, 'ab') as out:
        child = subprocess.Popen(['/bin/sh', '-c', 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=sysbox-gateway.socket exec "$@"', 'sh', *cmd],
                                 pass_fds=(3,), stdout=out, stderr=out)
    print('spawned', child.pid, flush=True)
    child.wait()
    print('exited', child.returncode, flush=True)
    if not stopping: time.sleep(float(restart_sec))
`;

let sys: System;
let supervisor: ReturnType<typeof startProcess> | undefined;
let events: string;
let gwLog: string;

/** Pids of the gateways the supervisor started, in order. */
function spawned(): number[] {
  return [...read(events).matchAll(/^spawned (\d+)$/gm)].map((m) => Number(m[1]));
}

const read = (file: string): string => (existsSync(file) ? readFileSync(file, 'utf8') : '');

/** Waits until the n-th gateway logged "started" (a bounded poll of its log). */
async function startedCount(n: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((read(gwLog).match(/"msg":"started"/g) ?? []).length < n) {
    if (supervisor !== undefined && supervisor.exitCode !== null)
      throw new Error(`the supervisor exited:\n${read(events)}\n${read(gwLog)}`);
    if (Date.now() > deadline)
      throw new Error(`gateway #${n} did not start:\n${read(events)}\n${read(gwLog)}`);
    await sleep(20);
  }
}

/** One call on a connection of its own, as sysbox-ipc dials one per call. */
async function call(method: string, req: object): Promise<any> {
  const client = connectGateway(sys.socket);
  try {
    return await rpc(client, method, req);
  } finally {
    client.close();
  }
}

const reg = (id: string) => ({
  id,
  rootfs: sys.dir,
  userns: '',
  netns: '',
  uidMappings: [],
  gidMappings: [],
});

describe('gateway restart under a held listening socket (systemd socket activation)', () => {
  beforeAll(async () => {
    sys = await startSystem({ apps: ['subid-allocator', 'shiftfs-mgr'] });
    await mkdir(join(sys.dir, 'run'), { mode: 0o700 });
    events = join(sys.dir, 'logs', 'supervisor.log');
    gwLog = join(sys.dir, 'logs', 'gateway.activated.log');
    const args = [
      '--nats-url',
      sys.nats.url,
      '--nats-creds',
      sys.nats.credentials('gateway'),
      '--node',
      sys.node,
      '--data-root',
      sys.dataRoot,
      '--socket',
      sys.socket,
      '--subuid-file',
      sys.etc.subuid,
      '--subgid-file',
      sys.etc.subgid,
      '--log-level',
      'debug',
    ];
    supervisor = startProcess(
      '/usr/bin/python3',
      ['-c', SUPERVISOR, sys.socket, '1', gwLog, binOf('gateway').path, ...args],
      { output: { file: events } },
    );
    await startedCount(1);
  });

  afterAll(async () => {
    if (supervisor !== undefined && supervisor.exitCode === null) {
      supervisor.kill('SIGTERM');
      await supervisor;
    }
    await sys?.stop();
  });

  it('takes the socket from LISTEN_FDS, and calls made while it restarts wait and are answered', async () => {
    onTestFailed(() => {
      console.log(`supervisor:\n${readFileSync(events, 'utf8')}\ngateway:\n${readFileSync(gwLog, 'utf8')}`);
    });
    expect(readFileSync(gwLog, 'utf8')).toMatch(/"fromSystemd":true/);
    expect((await stat(sys.socket)).mode & 0o777).toBe(0o600);
    expect((await call('Register', reg('a1'))).containerConfig).toBeDefined();

    // Killed between calls: the next call connects to the held socket and waits for the next gateway.
    const [first] = spawned();
    process.kill(first!, 'SIGKILL');
    const t0 = performance.now();
    const alloc = await call('SubidAlloc', { id: 'a1', size: 65536 });
    const waitedMs = performance.now() - t0;
    expect(alloc.uid).toBeGreaterThan(0);
    expect(spawned()).toHaveLength(2);
    await startedCount(2);
    // The gateway that died left the socket to the supervisor: nothing unlinked it.
    expect((await stat(sys.socket)).isSocket()).toBe(true);

    // Several calls at once during the restart, each on its own connection.
    process.kill(spawned()[1]!, 'SIGKILL');
    const t1 = performance.now();
    const many = await Promise.all(['b1', 'b2', 'b3', 'b4'].map((id) => call('Register', reg(id))));
    const waitedManyMs = performance.now() - t1;
    expect(many.every((r) => r.containerConfig)).toBe(true);
    await startedCount(3);

    // Killed right after a call was sent: the call may have reached the dying gateway.
    const inFlight = call('Register', reg('c1'));
    process.kill(spawned()[2]!, 'SIGKILL');
    const outcome = await statusOf(inFlight);
    // Retried as a client would: answered by the next gateway, or told the first try landed.
    const retry = outcome ? await statusOf(call('Register', reg('c1'))) : undefined;
    await startedCount(4);
    expect(
      outcome === undefined || retry === undefined || /redundant container registration/.test(retry.details),
    ).toBe(true);
    // A long-lived client whose connection the dying gateway had accepted: its call is lost with
    // the connection (UNAVAILABLE) unless it had not left the client yet; its retry reconnects to
    // the held socket and is answered.
    const kept = connectGateway(sys.socket);
    let keptOutcome: Awaited<ReturnType<typeof statusOf>>;
    let keptRetry: Awaited<ReturnType<typeof statusOf>>;
    try {
      await rpc(kept, 'Register', reg('d0'));
      const sent = rpc(kept, 'Register', reg('d1'));
      process.kill(spawned()[3]!, 'SIGKILL');
      keptOutcome = await statusOf(sent);
      keptRetry = keptOutcome ? await statusOf(rpc(kept, 'Register', reg('d1'))) : undefined;
    } finally {
      kept.close();
    }
    await startedCount(5);
    expect(keptOutcome === undefined || keptOutcome.code === status.UNAVAILABLE).toBe(true);
    expect(keptRetry === undefined || /redundant container registration/.test(keptRetry.details)).toBe(true);
    console.log(
      `long-lived connection, call in flight at SIGKILL: ${keptOutcome ? `failed (${keptOutcome.code}: ${keptOutcome.details}), retry ${keptRetry ? `${keptRetry.code}: ${keptRetry.details}` : 'ok'}` : 'answered by the next gateway'}`,
    );
    console.log(
      `wait across a gateway restart (RestartSec=1, SIGKILL then one call): ${waitedMs.toFixed(0)} ms; ` +
        `4 calls at once: ${waitedManyMs.toFixed(0)} ms; ` +
        `call in flight at SIGKILL: ${outcome ? `failed (${outcome.code}: ${outcome.details}), retry ${retry ? `${retry.code}: ${retry.details}` : 'ok'}` : 'answered by the next gateway'}`,
    );
    // Every gateway took the socket from the supervisor.
    expect(readFileSync(gwLog, 'utf8').match(/"fromSystemd":true/g)).toHaveLength(5);
  });
});
