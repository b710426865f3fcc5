/**
 * Starts the whole system on one host: a nats-server with JetStream in a state dir and
 * authentication on (credentials made on first start in --creds-dir, kept after), then every app
 * under apps/ that has a bin, each as its own process with its own credentials and the same NATS
 * URL, node and data root. Logs of all processes go to stdout (pretty on a terminal). SIGINT/SIGTERM stop the apps
 * first (they drain), then the server.
 */
import { readdirSync, readFileSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { prettyFactory } from 'pino-pretty';
import { z } from 'zod';
import { SERVICE_IDENTITIES, type IdentityName } from '@sysbox-mgr-ts/contracts';
import { DEFAULT_CREDENTIALS_DIR } from '@sysbox-mgr-ts/nats-auth';
import { startProcess } from '@sysbox-mgr-ts/exec';
import { boolOption, commonOptions, createLogger, option, parseConfig } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer } from '@sysbox-mgr-ts/test-nats';

const root = resolve(import.meta.dirname, '../..');
const options = {
  node: commonOptions.node,
  dataRoot: commonOptions.dataRoot,
  logLevel: commonOptions.logLevel,
  stateDir: option({
    flag: 'state-dir',
    env: 'SYSBOX_STATE_DIR',
    description: 'where the embedded nats-server keeps JetStream (the services state)',
    schema: z.string().startsWith('/').default('/var/lib/sysbox-mgr-ts'),
  }),
  credsDir: option({
    flag: 'creds-dir',
    env: 'SYSBOX_CREDS_DIR',
    description:
      'NATS credentials (one owner-only nkey file per identity) and the server configuration; made on first start',
    schema: z.string().startsWith('/').default(DEFAULT_CREDENTIALS_DIR),
  }),
  natsPort: option({
    flag: 'nats-port',
    env: 'SYSBOX_NATS_PORT',
    description: 'client port of the embedded nats-server',
    schema: z.coerce.number().int().min(1).max(65535).default(4222),
  }),
  oneProcess: boolOption(
    'one-process',
    'SYSBOX_ONE_PROCESS',
    'run the apps in one process (the all-in-one bin) instead of one process each',
  ),
  only: option({
    flag: 'only',
    env: 'SYSBOX_ONLY',
    description: 'comma-separated app names to start (default: every app)',
    schema: z.string().optional(),
  }),
};

const parsed = parseConfig(
  options,
  process.argv.slice(2),
  process.env,
  'sysbox-mgr-ts embedded default: nats-server + every daemon',
);
if ('help' in parsed) {
  process.stdout.write(parsed.help);
  process.exit(0);
}
const config = parsed.config;
const log = createLogger({
  service: 'dev-up',
  node: config.node,
  version: '0',
  level: config.logLevel,
  pretty: true,
});
const pretty = process.stdout.isTTY ? prettyFactory({ colorize: true }) : undefined;

interface App {
  name: string;
  bin: string;
}

/** Every app with a bin, one process each; or the all-in-one alone, which runs them itself. */
const DAEMONS = new Set<string>([...Object.keys(SERVICE_IDENTITIES), 'gateway']);

function discoverApps(): App[] {
  if (config.oneProcess) {
    const pkg = JSON.parse(readFileSync(join(root, 'apps', 'all-in-one', 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    return [{ name: 'all-in-one', bin: join(root, 'apps', 'all-in-one', Object.values(pkg.bin)[0]!) }];
  }
  const only = config.only?.split(',').map((s) => s.trim());
  return (
    readdirSync(join(root, 'apps'))
      .filter((dir) => existsSync(join(root, 'apps', dir, 'dist', 'main.js')))
      // The daemons: the four services and the gateway (apps/fleet is a command, not a daemon).
      .filter((dir) => DAEMONS.has(dir) && (!only || only.includes(dir)))
      .map((dir) => {
        const pkg = JSON.parse(readFileSync(join(root, 'apps', dir, 'package.json'), 'utf8')) as {
          bin: Record<string, string>;
        };
        const [, bin] = Object.entries(pkg.bin)[0]!;
        return { name: dir, bin: join(root, 'apps', dir, bin) };
      })
      // The gateway asks the services at start, so it goes last.
      .sort((a, b) => Number(a.name === 'gateway') - Number(b.name === 'gateway'))
  );
}

mkdirSync(join(config.stateDir, 'jetstream'), { recursive: true });
const nats = await startNatsServer({
  jetstream: true,
  port: config.natsPort,
  storeDir: join(config.stateDir, 'jetstream'),
  auth: { dir: config.credsDir, nodes: [config.node] },
  ownProcessGroup: true,
});
log.info(
  { url: nats.url, store: nats.storeDir, credentials: nats.credentialsDir },
  'nats-server started (authentication on)',
);

const env = {
  NATS_URL: nats.url,
  SYSBOX_NODE: config.node,
  SYSBOX_DATA_ROOT: config.dataRoot,
  LOG_LEVEL: config.logLevel,
};
const children = discoverApps().map((app) => {
  // The app's directory name is its identity; the path (never the seed) goes in its environment.
  // Each app's own credentials (the path, never the seed); the all-in-one reads the directory.
  const creds: Record<string, string> =
    app.name === 'all-in-one'
      ? { SYSBOX_CREDS_DIR: config.credsDir }
      : { NATS_CREDS: nats.credentials(app.name as IdentityName) };
  const only: Record<string, string> =
    app.name === 'all-in-one' && config.only ? { SYSBOX_ONLY: config.only } : {};
  const proc = startProcess(app.bin, [], {
    env: { ...env, ...creds, ...only },
    output: 'pipe',
    ownProcessGroup: true,
  });
  for (const stream of [proc.stdout, proc.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on('line', (line) => {
      process.stdout.write(pretty && line.startsWith('{') ? pretty(line) : `[${app.name}] ${line}\n`);
    });
  }
  void proc.then((r) => {
    if (!stopping) log.error({ app: app.name, exitCode: r.exitCode, signal: r.signal }, 'app exited');
  });
  log.info({ app: app.name, pid: proc.pid }, 'app started');
  return { app, proc };
});
if (children.length === 0) log.warn('no built app found under apps/*/dist');

let stopping = false;
async function stopAll(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping every app, then nats-server');
  // Reverse order: the gateway first, so nothing calls a service that is already gone.
  for (const { app, proc } of [...children].reverse()) {
    proc.kill('SIGTERM');
    const done = await Promise.race([
      proc.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 10_000)),
    ]);
    if (!done) {
      log.warn({ app: app.name }, 'did not stop in 10 s, killing');
      proc.kill('SIGKILL');
    }
  }
  await nats.stop();
  log.info('stopped');
  log.flush(() => process.exit(0));
}
process.once('SIGINT', () => void stopAll('SIGINT'));
process.once('SIGTERM', () => void stopAll('SIGTERM'));
