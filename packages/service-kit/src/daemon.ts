/**
 * The wiring every daemon's main.ts shares: config, logger, NATS connection, start, and a
 * graceful stop on SIGTERM/SIGINT (stop taking requests, finish those in flight, drain, flush).
 */
import { readFileSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { IdentityName } from '@sysbox-mgr-ts/contracts';
import type { AppMetrics } from '@sysbox-mgr-ts/metrics';
import { sdNotify } from '@sysbox-mgr-ts/host-native/notify';
import {
  DEFAULT_CREDENTIALS_DIR,
  clientAuthOptions,
  credentialsFile,
  readPrivateFile,
} from '@sysbox-mgr-ts/nats-auth';
import { commonOptions, parseConfig, type ConfigOf, type OptionSpecs } from './config.js';
import { createLogger, type LoggerSettings } from './logger.js';

const DRAIN_TIMEOUT_MS = 5000;

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export interface Stoppable {
  stop(): Promise<void>;
}

export type DaemonConfig<O extends OptionSpecs> = ConfigOf<typeof commonOptions & O>;

export interface DaemonContext<O extends OptionSpecs> {
  config: DaemonConfig<O>;
  nc: NatsConnection;
  log: Logger;
  version: string;
  /** This app's recorder when the process serves metrics (--metrics-address), else undefined. */
  metrics?: AppMetrics;
}

/**
 * An app as data: what its bin, the all-in-one bin, tests and benches all start. Each app's
 * src/app.ts exports one; its main.ts only hands it to runDaemon.
 */
export interface AppSpec<O extends OptionSpecs> {
  /** Process name, e.g. sysbox-subid-allocator. */
  name: string;
  /** Who the app is on NATS: its credentials, permissions and inbox prefix. */
  identity: IdentityName;
  about: string;
  options: O;
  start(ctx: DaemonContext<O>): Promise<Stoppable>;
}

/** Declares an app, inferring its config type from its options. */
export function defineApp<O extends OptionSpecs>(spec: AppSpec<O>): AppSpec<O> {
  return spec;
}

export interface DaemonSpec<O extends OptionSpecs> extends AppSpec<O> {
  version: string;
  /** Where and how to log, from the parsed config (default: JSON on stdout). */
  logTo?: (config: DaemonConfig<O>) => Pick<LoggerSettings, 'destination' | 'format'>;
}

/** The version field of the package.json next to a module's dist/ or src/ folder. */
export function packageVersion(moduleUrl: string): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', moduleUrl), 'utf8')) as { version: string };
  return pkg.version;
}

export interface NatsClientConfig {
  natsUrl: string;
  /** A path, 'none', or undefined for the identity's file in the default credentials directory. */
  natsCreds?: string | undefined;
  natsTlsCa?: string | undefined;
  natsTlsCert?: string | undefined;
  natsTlsKey?: string | undefined;
}

/**
 * Connects as `identity`. Refuses (throws) a credentials file that others can read or that is
 * missing; 'none' is the only way to connect without credentials, and it is logged.
 */
export async function connectNats(
  config: NatsClientConfig,
  identity: IdentityName,
  name: string,
  log: Logger,
  /** once: a command's connection (sysbox-fleet): fail at once when the first connect fails, never reconnect. */
  mode: { once?: boolean } = {},
): Promise<NatsConnection> {
  const creds =
    config.natsCreds === 'none'
      ? undefined
      : (config.natsCreds ?? credentialsFile(DEFAULT_CREDENTIALS_DIR, identity));
  if (creds === undefined) log.warn('connecting to NATS without credentials (--nats-creds none)');
  // The key file is a secret like the seed: same owner-only rule.
  if (config.natsTlsKey) readPrivateFile(config.natsTlsKey);
  const nc = await connect({
    servers: config.natsUrl.split(',').map((s) => s.trim()),
    name,
    ...clientAuthOptions({
      identity,
      credentialsFile: creds,
      tls: { caFile: config.natsTlsCa, certFile: config.natsTlsCert, keyFile: config.natsTlsKey },
    }),
    maxReconnectAttempts: mode.once ? 0 : -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: !mode.once,
    // nats.js otherwise builds two Errors (stack traces) per request, for stacks our typed errors
    // never show: 1.8% of the gateway's CPU in a Register/SubidAlloc loop (cpu profile).
    noAsyncTraces: true,
  });
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error')
        log.warn({ nats: s }, `nats ${s.type}`);
    }
  })();
  return nc;
}

/**
 * sd_notify(3) to the supervisor named in NOTIFY_SOCKET (systemd's Type=notify units), if any. A
 * failure to tell it is logged, never fatal: the daemon serves either way.
 */
export function notifySupervisor(
  message: string,
  env: Record<string, string | undefined>,
  log: Logger,
): void {
  try {
    if (sdNotify(message, env)) log.debug({ notifySocket: env.NOTIFY_SOCKET }, `sd_notify ${message}`);
  } catch (err) {
    log.warn({ err, notifySocket: env.NOTIFY_SOCKET }, `sd_notify ${message} failed`);
  }
}

export interface MetricsEndpoint {
  /** The recorder of one app in this process's registry (label app=<name>). */
  forApp(app: string): AppMetrics;
  /** Where it listens, host:port. */
  address: string;
  stop(): Promise<void>;
}

/**
 * One registry and one /metrics listener for the process (the all-in-one's five apps share
 * them). prom-client is loaded here, on demand: a daemon without --metrics-address never loads it.
 */
export async function serveMetrics(address: string, log: Logger): Promise<MetricsEndpoint> {
  const { createMetricsRegistry, startMetricsServer } = await import('@sysbox-mgr-ts/metrics/prometheus');
  const registry = createMetricsRegistry({
    onReadError: (err, what) => log.warn({ err }, `metrics: reading ${what} failed`),
  });
  const server = await startMetricsServer(address, registry);
  log.info({ metrics: `http://${server.address}/metrics` }, 'serving metrics');
  return { forApp: (app) => registry.forApp(app), address: server.address, stop: () => server.stop() };
}

export async function runDaemon<O extends OptionSpecs>(
  spec: DaemonSpec<O>,
  argv: readonly string[] = process.argv.slice(2),
  env: Record<string, string | undefined> = process.env,
): Promise<void> {
  if (argv.includes('--version') || argv.includes('-v')) {
    process.stdout.write(`${spec.name} version ${spec.version}\n`);
    return;
  }
  let parsed;
  try {
    parsed = parseConfig(
      { ...commonOptions, ...spec.options },
      argv,
      env,
      `${spec.name} ${spec.version}: ${spec.about}`,
    );
  } catch (err) {
    process.stderr.write(`${spec.name}: ${(err as Error).message}\nTry --help.\n`);
    process.exit(2);
  }
  if ('help' in parsed) {
    process.stdout.write(parsed.help);
    return;
  }
  const config = parsed.config as DaemonConfig<O>;
  const log = createLogger({
    service: spec.name,
    node: config.node,
    version: spec.version,
    level: config.logLevel,
    pretty: config.logPretty,
    ...spec.logTo?.(config),
  });
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

  let nc: NatsConnection;
  let app: Stoppable;
  let metrics: MetricsEndpoint | undefined;
  try {
    // First: a taken port fails the start before anything else is set up.
    if (config.metricsAddress) metrics = await serveMetrics(config.metricsAddress, log);
    nc = await connectNats(config, spec.identity, `${spec.name}@${config.node}`, log);
    app = await spec.start({
      config,
      nc,
      log,
      version: spec.version,
      metrics: metrics?.forApp(spec.identity),
    });
  } catch (err) {
    log.fatal({ err }, 'start failed');
    log.flush();
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 200).unref();
    return;
  }
  // Started means reachable: the server has every subscription of the app before anyone is told.
  await nc.flush().catch((err: unknown) => log.warn({ err }, 'flush after start failed'));
  log.info({ natsUrl: config.natsUrl, dataRoot: config.dataRoot }, 'started');
  notifySupervisor('READY=1', env, log);

  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    notifySupervisor('STOPPING=1', env, log);
    try {
      await app.stop();
      // With the server gone, drain would wait for a reconnect forever.
      await Promise.race([nc.drain(), delay(DRAIN_TIMEOUT_MS)]);
      if (!nc.isClosed()) {
        log.warn({ ms: DRAIN_TIMEOUT_MS }, 'NATS drain did not finish; closing');
        await nc.close();
      }
      await metrics?.stop();
    } catch (err) {
      log.error({ err }, 'stop failed');
      process.exitCode = 1;
    }
    log.info('stopped');
    log.flush(() => process.exit());
  };
  // As upstream's manager: each of these stops it gracefully, exit 0.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const)
    process.once(signal, () => void stop(signal));
}
