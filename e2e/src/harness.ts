/**
 * Starts the system the way production does: a real nats-server and each app from its built
 * bin as its own process, with a temp data root, temp copies of /etc/subuid, /etc/subgid and
 * /etc/login.defs, and the gateway on a temp socket. Logs go to one file per process, printed
 * when a test fails. `stop()` checks that the host is clean.
 */
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { SERVICE_IDENTITIES, inboxPrefixOf, type IdentityName } from '@sysbox-mgr-ts/contracts';
import { run, startProcess } from '@sysbox-mgr-ts/exec';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import type { RawCredentials } from './raw-nats.js';

export const repoRoot = resolve(import.meta.dirname, '../..');

/** The five daemons, and 'all-in-one': all five in one process (apps/all-in-one). */
export type AppName =
  'subid-allocator' | 'vol-mgr' | 'shiftfs-mgr' | 'rootfs-cloner' | 'gateway' | 'all-in-one';
type DaemonName = Exclude<AppName, 'all-in-one'>;
export const SERVICE_APPS: AppName[] = ['subid-allocator', 'vol-mgr', 'shiftfs-mgr', 'rootfs-cloner'];
/** `$SRV` names of the apps. */
export const SERVICE_NAMES = Object.fromEntries(
  Object.entries(SERVICE_IDENTITIES).map(([app, svc]) => [app, svc.name]),
) as Record<Exclude<DaemonName, 'gateway'>, string>;
/** An app's command and its file, as its package.json `bin` names them (one per app). */
export function binOf(app: AppName): { name: string; path: string } {
  const bins = JSON.parse(readFileSync(join(repoRoot, 'apps', app, 'package.json'), 'utf8')).bin as Record<
    string,
    string
  >;
  const [name, file] = Object.entries(bins)[0]!;
  return { name, path: join(repoRoot, 'apps', app, file) };
}

export interface Proc {
  app: AppName;
  replica: number;
  proc: ReturnType<typeof startProcess>;
  logFile: string;
}

/** What the system runs on: a nats-server of its own, or a cluster several simulated hosts share. */
export interface Bus {
  /** Client URL(s), comma-separated. */
  url: string;
  credentials(identity: IdentityName): string;
  connect(identity?: IdentityName): Promise<NatsConnection>;
  stop(): Promise<void>;
}

export interface System {
  dir: string;
  dataRoot: string;
  socket: string;
  node: string;
  nats: Bus;
  /** Client port of the (first) nats-server, for raw protocol clients. */
  natsPort: number;
  nc: NatsConnection;
  etc: { subuid: string; subgid: string; loginDefs: string };
  procs: Proc[];
  /** What `nats --nkey <file> --inbox-prefix <prefix>` would use for an identity. */
  credentials(identity: IdentityName): Required<RawCredentials>;
  start(app: AppName, extraArgs?: string[]): Promise<Proc>;
  kill(app: AppName, signal?: NodeJS.Signals): Promise<void>;
  logs(): string;
  /**
   * A power loss and a boot (startSystem({ boots: true }) only): every daemon and the nats-server
   * SIGKILLed (its JetStream store kept), every mount under the temp root gone as a reboot takes
   * them, a new boot id, then the nats-server and the daemons that ran started again, in their
   * order. Answers the new boot id.
   */
  reboot(): Promise<string>;
  /** The boot id the daemons started from now on see (boots: true), else undefined. */
  bootId(): string | undefined;
  stop(): Promise<void>;
}

export interface SystemOptions {
  apps?: AppName[];
  /** Extra flags per app. */
  args?: Partial<Record<AppName, string[]>>;
  /** Daemons' log level: debug (default) for tests' failure logs, info for the bench. */
  logLevel?: string;
  /** Flags for every app (e.g. `--kv-replicas 3` on a cluster). */
  commonArgs?: string[];
  /** Run on this bus (left running at stop) instead of starting a nats-server of its own. */
  nats?: Bus;
  node?: string;
  /**
   * Runs every daemon in a mount namespace of its own where a file of the test is bound over
   * /proc/sys/kernel/random/boot_id, so that reboot() can give them a new boot. The temp root is
   * made a shared mount first, so mounts under it (the runtime's, the daemons') are seen by
   * the test and by every daemon, as on a host; /proc is made private inside each namespace, so
   * the bound boot id never reaches the host.
   */
  boots?: boolean;
  /**
   * How vol-mgr and rootfs-cloner learn where container rootfs may live: `--allowed-rootfs-roots
   * <dir>` (the default), or as a host with Docker's data-root moved declares it: no flag, and
   * `<dir>/etc/daemon.json` naming `<dir>/docker` as data-root.
   */
  rootfsRoots?: 'flag' | 'daemon-json';
  /** The dir the system's temp root is made in (default: the OS temp dir); benches pick a filesystem. */
  under?: string;
}

export async function startSystem(opts: SystemOptions = {}): Promise<System> {
  const dir = mkdtempSync(join(opts.under ?? tmpdir(), 'sysbox-e2e-'));
  const dataRoot = join(dir, 'data');
  const etcDir = join(dir, 'etc');
  mkdirSync(dataRoot);
  mkdirSync(etcDir);
  mkdirSync(join(dir, 'logs'));
  const etc = {
    subuid: join(etcDir, 'subuid'),
    subgid: join(etcDir, 'subgid'),
    loginDefs: join(etcDir, 'login.defs'),
  };
  writeFileSync(etc.subuid, 'alice:100000:65536\n');
  writeFileSync(etc.subgid, 'alice:100000:65536\n');
  writeFileSync(
    etc.loginDefs,
    'SUB_UID_MIN 100000\nSUB_UID_MAX 600100000\nSUB_GID_MIN 100000\nSUB_GID_MAX 600100000\n',
  );
  const socket = join(dir, 'run', 'sysmgr.sock');
  const node = opts.node ?? `e2e-${Math.random().toString(36).slice(2, 8)}`;
  // Authentication on, every identity scoped to this node, as `sysbox-nats-auth init --node` makes it.
  const ownNats = opts.nats ? undefined : await startNatsServer({ jetstream: true, auth: { nodes: [node] } });
  const nats: Bus = opts.nats ?? ownNats!;
  const natsPort = Number(new URL(nats.url.split(',')[0]!).port);
  const nc = await nats.connect('operator');
  const procs: Proc[] = [];
  /** The boot id file daemons started now bind over /proc's (boots: true). */
  let bootFile: string | undefined;
  const newBoot = (): string => {
    const id = randomUUID();
    bootFile = join(dir, 'boot', `boot_id.${id}`);
    mkdirSync(dirname(bootFile), { recursive: true });
    writeFileSync(bootFile, `${id}\n`);
    return id;
  };
  if (opts.boots) {
    if (opts.nats) throw new Error('boots: true needs the system to own its nats-server');
    await run('mount', ['--bind', dir, dir], { timeout: 10_000 });
    await run('mount', ['--make-shared', dir], { timeout: 10_000 });
    newBoot();
  }
  /** The runtime's and the daemons' mounts under the temp root, deepest first (not the root's own bind). */
  const mountsInside = async () =>
    mountsUnder(await readMountInfo(), dir).filter((m) => m.mountPoint !== dir);

  const subidFiles = ['--subuid-file', etc.subuid, '--subgid-file', etc.subgid];
  // The runtimes' config files are the test's own (missing ones count with their runtime's
  // default store), never the host's.
  const runtimeConfigs = [
    ['--docker-config', 'daemon.json'],
    ['--containerd-config', 'containerd.toml'],
    ['--containers-storage-config', 'storage.conf'],
    ['--k3s-config', 'k3s.yaml'],
    ['--rke2-config', 'rke2.yaml'],
  ].flatMap(([flag, file]) => [flag!, join(etcDir, file!)]);
  if (opts.rootfsRoots === 'daemon-json')
    writeFileSync(join(etcDir, 'daemon.json'), JSON.stringify({ 'data-root': join(dir, 'docker') }));
  const guard = [
    ...(opts.rootfsRoots === 'daemon-json' ? [] : ['--allowed-rootfs-roots', dir]),
    ...runtimeConfigs,
    ...subidFiles,
  ];
  const baseArgs = (app: AppName): string[] => {
    const creds =
      app === 'all-in-one'
        ? ['--creds-dir', dirname(nats.credentials('operator'))]
        : ['--nats-creds', nats.credentials(app)];
    const common = [
      '--nats-url',
      nats.url,
      ...creds,
      '--node',
      node,
      '--data-root',
      dataRoot,
      '--log-level',
      opts.logLevel ?? 'debug',
    ];
    const own: Record<DaemonName, string[]> = {
      // Exclusive mode, so that "same ids after restart" and "ids released" can fail.
      'subid-allocator': [
        '--subuid-file',
        etc.subuid,
        '--subgid-file',
        etc.subgid,
        '--login-defs',
        etc.loginDefs,
        '--mode',
        'exclusive',
        '--pool-size',
        String(64 * 65536),
      ],
      // Container rootfs live under the test's temp dir, and ids come from its subuid files.
      'vol-mgr': [...guard],
      // No modprobe: the host has no shiftfs module and the answer is 'unsupported' either way.
      'shiftfs-mgr': ['--no-modprobe'],
      'rootfs-cloner': [...guard],
      gateway: ['--socket', socket, '--watch-interval-ms', '50', ...subidFiles],
    };
    // One process for all five takes every daemon's flags (shared ones mean the same to each).
    const apps: DaemonName[] = app === 'all-in-one' ? ([...SERVICE_APPS, 'gateway'] as DaemonName[]) : [app];
    return [
      ...common,
      ...(opts.commonArgs ?? []),
      ...apps.flatMap((a) => [...own[a], ...(opts.args?.[a] ?? [])]),
    ];
  };

  const start = async (app: AppName, extraArgs: string[] = []): Promise<Proc> => {
    const replica = procs.filter((p) => p.app === app).length;
    const logFile = join(dir, 'logs', `${app}.${replica}.log`);
    const bin = binOf(app).path;
    // The bin itself, as an operator runs it (its shebang carries the node flags).
    const argv = [...baseArgs(app), ...extraArgs];
    const proc = bootFile
      ? startProcess(
          'unshare',
          [
            '--mount',
            '--propagation',
            'unchanged',
            '--',
            'sh',
            '-c',
            'mount --make-rprivate /proc && mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"',
            bootFile,
            bin,
            ...argv,
          ],
          { output: { file: logFile } },
        )
      : startProcess(bin, argv, { output: { file: logFile } });
    const p: Proc = { app, replica, proc, logFile };
    procs.push(p);
    await waitReady(p);
    return p;
  };

  const waitReady = async (p: Proc): Promise<void> => {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (p.proc.exitCode !== null) throw new Error(`${p.app} exited early:\n${safeRead(p.logFile)}`);
      // The all-in-one logs `started` per app, then once with the list of apps.
      const ready = p.app === 'all-in-one' ? /"apps":\[[^\]]*\],"msg":"started"/ : /"msg":"started"/;
      if (ready.test(safeRead(p.logFile))) return;
      await sleep(50);
    }
    throw new Error(`${p.app} not ready in 20 s:\n${safeRead(p.logFile)}`);
  };

  const system: System = {
    dir,
    dataRoot,
    socket,
    node,
    nats,
    natsPort,
    nc,
    etc,
    procs,
    credentials: (identity) => ({
      seedFile: nats.credentials(identity),
      inboxPrefix: inboxPrefixOf(identity),
    }),
    start,
    async kill(app, signal = 'SIGKILL') {
      for (const p of procs.filter((x) => x.app === app && x.proc.exitCode === null)) {
        p.proc.kill(signal);
        await p.proc;
      }
    },
    logs() {
      return procs.map((p) => `==== ${p.app}#${p.replica} ====\n${safeRead(p.logFile)}`).join('\n');
    },
    bootId: () => bootFile && readFileSync(bootFile, 'utf8').trim(),
    async reboot() {
      if (!bootFile) throw new Error('reboot() needs startSystem({ boots: true })');
      const alive = procs.filter((p) => p.proc.exitCode === null && p.proc.signalCode === null);
      const ran = [...new Set(alive.map((p) => p.app))];
      for (const p of alive) {
        p.proc.kill('SIGKILL');
        await p.proc;
      }
      await (ownNats as NatsServer).crash();
      for (const m of await mountsInside())
        await run('umount', ['-l', m.mountPoint], { timeout: 10_000 }).catch(() => undefined);
      const id = newBoot();
      await (ownNats as NatsServer).start();
      for (const app of ran) await start(app);
      return id;
    },
    async stop() {
      for (const p of [...procs].reverse()) {
        if (p.proc.exitCode !== null) continue;
        p.proc.kill('SIGTERM');
        const done = await Promise.race([p.proc.then(() => true), sleep(10_000).then(() => false)]);
        if (!done) {
          appendFileSync(p.logFile, '\n[harness] did not stop on SIGTERM within 10 s\n');
          p.proc.kill('SIGKILL');
          await p.proc;
        }
      }
      await nc.close();
      await ownNats?.stop();
      const strays = straysUnder(dir);
      // Whatever a test left mounted under the temp root is lifted before the dir goes.
      const left = opts.boots ? await mountsInside() : mountsUnder(await readMountInfo(), dir);
      for (const m of left)
        await run('umount', ['-l', m.mountPoint], { timeout: 10_000 }).catch(() => undefined);
      if (opts.boots) await run('umount', ['-l', dir], { timeout: 10_000 });
      await rm(dir, { recursive: true, force: true });
      if (left.length > 0)
        throw new Error(`mounts left under ${dir}: ${left.map((m) => m.mountPoint).join(', ')}`);
      if (strays.length > 0) throw new Error(`processes left running: ${strays.join('; ')}`);
    },
  };

  try {
    for (const app of opts.apps ?? [...SERVICE_APPS, 'gateway']) await start(app);
  } catch (err) {
    // A daemon that does not come up must not leave the ones before it running, nor the temp root.
    await system.stop().catch(() => undefined);
    throw err;
  }
  return system;
}

/** Processes whose command line names the temp root (daemons, rsync, mount helpers), killed and reported. */
function straysUnder(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)) {
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {
      continue;
    }
    if (!cmd.includes(dir)) continue;
    found.push(`${pid}: ${cmd.slice(0, 200)}`);
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
