/**
 * Starts a real nats-server (Debian package `nats-server`) for tests, benchmarks and the embedded
 * default: JetStream on, a free port on 127.0.0.1, a temp store unless one is given, and
 * authentication on: the server runs from a configuration written by @sysbox-mgr-ts/nats-auth,
 * with a credentials file per identity, so tests run under the permissions production has.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionOptions, NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import type { IdentityName } from '@sysbox-mgr-ts/contracts';
import { startProcess } from '@sysbox-mgr-ts/exec';
import {
  clientAuthOptions,
  credentialsFile,
  writeServerSetup,
  type NodeScope,
  type TlsFiles,
} from '@sysbox-mgr-ts/nats-auth';

export interface NatsServerOptions {
  jetstream?: boolean;
  /** 0 (default) picks a free port. */
  port?: number;
  host?: string;
  /** JetStream store dir; a temp dir (removed on stop) when left out. */
  storeDir?: string;
  /** Path of the nats-server binary. */
  binary?: string;
  /** Extra server arguments. */
  args?: string[];
  /** Keep the server out of the caller's process group (see DaemonOptions.ownProcessGroup). */
  ownProcessGroup?: boolean;
  startTimeoutMs?: number;
  /**
   * Credentials and permissions (default: on, temp credentials for every node). `false` starts an
   * open server: only for tests that prove what an open server would allow is refused by ours.
   */
  auth?: false | { dir?: string; nodes?: NodeScope };
  /** Serve TLS with this certificate (and verify client certificates against `caFile`). */
  tls?: TlsFiles;
  /** Member of a cluster (see startNatsCluster). */
  cluster?: { name: string; port: number; routes: string[]; serverName: string };
  /**
   * A hub of leaf hosts (`auth.nodes` are the leaf nodes): admits only operator, monitor and the
   * leaf connections, on `port` (a free one when left out, kept across restarts).
   */
  hub?: { port?: number };
  /** A leaf host (`auth.nodes` is its one node, `auth.dir` the hub's credentials): see nats-auth. */
  leaf?: { hubUrls: string[]; domain?: string; hubTlsCa?: string };
}

export interface NatsServer {
  url: string;
  port: number;
  storeDir: string | undefined;
  pid: number;
  /** The credentials directory (undefined for an open server). */
  credentialsDir: string | undefined;
  /** A hub's leaf address, `host:port` (undefined when the server is no hub). */
  leafUrl: string | undefined;
  /** The credentials file of an identity. */
  credentials(identity: IdentityName): string;
  /** Connects as an identity (default `operator`, which may do everything). */
  connect(identity?: IdentityName, options?: Omit<ConnectionOptions, 'servers'>): Promise<NatsConnection>;
  /** Everything the server logged so far. */
  logs(): string;
  /** Stops the server; removes a temp store. */
  stop(): Promise<void>;
  /** Kills and starts the server again on the same port and store (JetStream state survives). */
  restart(): Promise<void>;
  /** SIGKILL, as a host or process dies; `start()` brings it back on the same port and store. */
  crash(): Promise<void>;
  start(): Promise<void>;
}

/** As the daemons connect (service-kit connectNats), so tests and benches see their costs. */
const DAEMON_LIKE: ConnectionOptions = { noAsyncTraces: true };

const LISTENING = /Listening for client connections on [^\s]*:(\d+)/;
const READY = /Server is ready/;

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  const host = opts.host ?? '127.0.0.1';
  const jetstream = opts.jetstream ?? true;
  const tempStore = jetstream && !opts.storeDir ? await mkdtemp(join(tmpdir(), 'nats-js-')) : undefined;
  const storeDir = opts.storeDir ?? tempStore;
  const tempCredentials =
    opts.auth !== false && !opts.auth?.dir ? await mkdtemp(join(tmpdir(), 'nats-creds-')) : undefined;
  const credentialsDir = opts.auth === false ? undefined : (opts.auth?.dir ?? tempCredentials);
  const leafPort = opts.hub ? opts.hub.port || (await freePorts(1))[0]! : undefined;
  const nodes = (opts.auth || undefined)?.nodes ?? ['*'];
  const configFile = credentialsDir
    ? writeServerSetup({
        dir: credentialsDir,
        nodes,
        host,
        storeDir: jetstream ? storeDir : undefined,
        tls: opts.tls,
        serverName: opts.cluster?.serverName,
        cluster: opts.cluster && {
          name: opts.cluster.name,
          port: opts.cluster.port,
          routes: opts.cluster.routes,
          host,
        },
        configName: opts.cluster
          ? `nats-server-${opts.cluster.serverName}.conf`
          : opts.leaf
            ? `nats-server-leaf-${nodes[0]}.conf`
            : undefined,
        hub: leafPort ? { port: leafPort, host } : undefined,
        leaf: opts.leaf,
      }).configFile
    : undefined;
  let port = opts.port ?? 0;
  let log = '';
  let child: ReturnType<typeof startProcess> | undefined;

  const launch = async (): Promise<void> => {
    // Flags win over the configuration file: the port is chosen here (and kept across restarts).
    const args = [
      ...(configFile ? ['-c', configFile] : []),
      '-a',
      host,
      '-p',
      port === 0 ? '-1' : String(port),
    ];
    // With a configuration file, JetStream and its store are in it.
    if (jetstream && !configFile) args.push('-js', '-sd', storeDir!);
    args.push(...(opts.args ?? []));
    const proc = startProcess(opts.binary ?? 'nats-server', args, {
      output: 'pipe',
      ownProcessGroup: opts.ownProcessGroup,
    });
    child = proc;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`nats-server did not start within ${opts.startTimeoutMs ?? 10_000} ms:\n${log}`)),
        opts.startTimeoutMs ?? 10_000,
      );
      const onData = (chunk: Buffer): void => {
        log += chunk.toString();
        const m = LISTENING.exec(log);
        if (m && READY.test(log)) {
          port = Number(m[1]);
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stderr?.on('data', onData);
      proc.stdout?.on('data', onData);
      void proc.then((r) => {
        clearTimeout(timer);
        reject(
          new Error(
            `nats-server exited (${r.exitCode ?? r.signal}) before it was ready:\n${log}${r.shortMessage ?? ''}`,
          ),
        );
      });
    });
  };

  const kill = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null) return;
    proc.kill('SIGTERM');
    const exited = await Promise.race([proc.then(() => true), delay(5000).then(() => false)]);
    if (!exited) {
      proc.kill('SIGKILL');
      await proc;
    }
  };

  await launch();
  return {
    get url() {
      return `nats://${host}:${port}`;
    },
    get port() {
      return port;
    },
    storeDir,
    credentialsDir,
    leafUrl: leafPort ? `${host}:${leafPort}` : undefined,
    credentials(identity) {
      if (!credentialsDir) throw new Error('this nats-server runs without authentication');
      return credentialsFile(credentialsDir, identity);
    },
    connect(identity = 'operator', options = {}) {
      const auth = credentialsDir
        ? clientAuthOptions({ identity, credentialsFile: credentialsFile(credentialsDir, identity) })
        : {};
      return connect({ ...DAEMON_LIKE, ...options, ...auth, servers: `nats://${host}:${port}` });
    },
    get pid() {
      return child?.pid ?? -1;
    },
    logs: () => log,
    stop: async () => {
      await kill();
      if (tempStore) await rm(tempStore, { recursive: true, force: true });
      if (tempCredentials) await rm(tempCredentials, { recursive: true, force: true });
    },
    restart: async () => {
      await kill();
      log = '';
      await launch();
    },
    crash: async () => {
      const proc = child;
      if (!proc || proc.exitCode !== null) return;
      proc.kill('SIGKILL');
      await proc.catch(() => undefined);
    },
    start: async () => {
      log = '';
      await launch();
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export interface NatsCluster {
  servers: NatsServer[];
  /** Every member's client URL, comma-separated (what `--nats-url` takes). */
  url: string;
  credentialsDir: string;
  /** A hub's members' leaf addresses, `host:port` (empty when the cluster is no hub). */
  leafUrls: string[];
  credentials(identity: IdentityName): string;
  /** Connects as an identity to every member (the client fails over between them). */
  connect(identity?: IdentityName, options?: Omit<ConnectionOptions, 'servers'>): Promise<NatsConnection>;
  stop(): Promise<void>;
}

/**
 * An N-member JetStream cluster on loopback: routes authenticated with a shared secret, the same
 * identities on every member, a store per member. Resolves once JetStream can place a stream on
 * every member.
 */
export async function startNatsCluster(
  opts: {
    size?: number;
    auth?: { nodes?: NodeScope };
    name?: string;
    /** A hub of leaf hosts (`auth.nodes` are the leaf nodes): every member listens for them. */
    hub?: boolean;
  } = {},
): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const credentialsDir = await mkdtemp(join(tmpdir(), 'nats-cluster-creds-'));
  const clientPorts = await freePorts(size);
  const routePorts = await freePorts(size);
  const leafPorts = opts.hub ? await freePorts(size) : [];
  const routes = routePorts.map((p) => `127.0.0.1:${p}`);
  const name = opts.name ?? 'sysbox';
  // Seeds and the route secret first, once: the members then only read them.
  writeServerSetup({
    dir: credentialsDir,
    nodes: opts.auth?.nodes ?? ['*'],
    hub: opts.hub ? { port: leafPorts[0]! } : undefined,
  });
  const servers = await Promise.all(
    clientPorts.map((port, i) =>
      startNatsServer({
        port,
        auth: { dir: credentialsDir, nodes: opts.auth?.nodes },
        cluster: { name, port: routePorts[i]!, routes, serverName: `${name}-${i}` },
        hub: opts.hub ? { port: leafPorts[i]! } : undefined,
        startTimeoutMs: 30_000,
      }),
    ),
  );
  const url = servers.map((s) => s.url).join(',');
  const cluster: NatsCluster = {
    servers,
    url,
    credentialsDir,
    leafUrls: servers.flatMap((s) => (s.leafUrl ? [s.leafUrl] : [])),
    credentials: (identity) => credentialsFile(credentialsDir, identity),
    connect(identity = 'operator', options = {}) {
      const auth = clientAuthOptions({
        identity,
        credentialsFile: credentialsFile(credentialsDir, identity),
      });
      return connect({ ...DAEMON_LIKE, ...options, ...auth, servers: servers.map((s) => s.url) });
    },
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
      await rm(credentialsDir, { recursive: true, force: true });
    },
  };
  await waitForJetStream(cluster, size);
  return cluster;
}

/**
 * Until a stream with one replica per member can be placed: a meta leader answering is not enough,
 * as it may not know every peer yet ("no suitable peers for placement" for an R3 bucket made at
 * once; seen in CI). A memory stream of `size` replicas is created and deleted as the probe.
 */
async function waitForJetStream(cluster: NatsCluster, size: number): Promise<void> {
  const nc = await cluster.connect();
  const probe = 'TEST_NATS_PLACEMENT_PROBE';
  const api = async (subject: string, body: object): Promise<void> => {
    const m = await nc.request(subject, JSON.stringify(body), { timeout: 2000 });
    const reply = m.json<{ error?: { description: string } }>();
    if (reply.error) throw new Error(reply.error.description);
  };
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await api(`$JS.API.STREAM.CREATE.${probe}`, {
          name: probe,
          subjects: ['test-nats.placement-probe'],
          storage: 'memory',
          num_replicas: size,
        });
        await api(`$JS.API.STREAM.DELETE.${probe}`, {});
        return;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`JetStream cluster not ready in 30 s: ${(err as Error).message}`);
        await delay(200);
      }
    }
  } finally {
    await nc.close();
  }
}

export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Server>((resolve) => {
          const s = createServer();
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
export { startAppDaemon, type AppDaemon, type AppDaemonOptions } from './daemon.js';
/** Where an identity's credentials lie in a directory `sysbox-nats-auth init` (or the embedded default) made. */
export { credentialsFile } from '@sysbox-mgr-ts/nats-auth';
