/**
 * sysbox-fleet: the inventory command. Connects with the read-only monitor identity, gathers the
 * fleet (inventory.ts), builds the report (report.ts) and writes it to stdout as tables or JSON:
 * stdout is the command's product; logs (pino) go to stderr.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import { NodeName, SysboxError } from '@sysbox-mgr-ts/contracts';
import {
  boolOption,
  commonOptions,
  connectNats,
  createLogger,
  option,
  parseConfig,
  silentLogger,
  type ConfigOf,
  type Logger,
} from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';
import { formatJson, formatTable } from './format.js';
import { gatherFleet } from './inventory.js';
import { buildReport, type FleetReport } from './report.js';

export const FLEET_BIN = 'sysbox-fleet';

export const fleetOptions = {
  natsUrl: commonOptions.natsUrl,
  natsCreds: commonOptions.natsCreds,
  natsTlsCa: commonOptions.natsTlsCa,
  natsTlsCert: commonOptions.natsTlsCert,
  natsTlsKey: commonOptions.natsTlsKey,
  node: option({
    flag: 'node',
    description: 'only these nodes, comma-separated (default: every node that answers discovery)',
    schema: z
      .string()
      .transform((s) => s.split(',').map((n) => n.trim()))
      .pipe(z.array(NodeName).min(1))
      .optional(),
  }),
  json: boolOption('json', undefined, 'print the report as JSON (for scripts) instead of tables'),
  containers: boolOption(
    'containers',
    undefined,
    'read every list and show each container and what it holds (default: counts from each service)',
  ),
  timeoutMs: option({
    flag: 'timeout-ms',
    env: 'SYSBOX_FLEET_TIMEOUT_MS',
    description: 'bound of each request (a list page, the first discovery answer)',
    schema: z.coerce.number().int().min(1).max(600_000).default(5000),
  }),
  discoveryMs: option({
    flag: 'discovery-ms',
    env: 'SYSBOX_FLEET_DISCOVERY_MS',
    description: 'discovery ends after this long without a new answer from a service instance',
    schema: z.coerce.number().int().min(1).max(60_000).default(200),
  }),
  logLevel: commonOptions.logLevel,
};

export type FleetConfig = ConfigOf<typeof fleetOptions>;

export interface FleetIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Where logs go (default: stderr). */
  logDestination?: NodeJS.WritableStream;
}

/** The inventory of the fleet `nc` sees: the report, as gathered now. */
export async function fleetReport(
  nc: NatsConnection,
  config: Pick<FleetConfig, 'timeoutMs' | 'discoveryMs'> & {
    node?: readonly string[] | undefined;
    containers?: boolean | undefined;
  },
  log: Logger = silentLogger(),
): Promise<FleetReport> {
  const snapshot = await gatherFleet(nc, {
    nodes: config.node,
    discoveryQuietMs: config.discoveryMs,
    timeoutMs: config.timeoutMs,
    containers: config.containers,
    log,
  });
  return buildReport(snapshot, Date.now());
}

/**
 * Runs the command: 0 with the report written, 1 when the bus could not be read (connection,
 * credentials, discovery), 2 for bad usage. Never throws.
 */
export async function runFleet(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  io: FleetIo,
  version = '0.0.0',
): Promise<number> {
  let config: FleetConfig;
  try {
    const parsed = parseConfig(
      fleetOptions,
      argv,
      env,
      `${FLEET_BIN} ${version}: every sysbox node's services, containers and what each holds, read-only (monitor identity)`,
    );
    if ('help' in parsed) {
      io.stdout(parsed.help);
      return 0;
    }
    config = parsed.config;
  } catch (err) {
    io.stderr(`${FLEET_BIN}: ${(err as Error).message}\nTry --help.\n`);
    return 2;
  }
  const log = createLogger({
    service: FLEET_BIN,
    node: '-',
    version,
    level: config.logLevel === 'info' ? 'warn' : config.logLevel,
    destination: io.logDestination ?? process.stderr,
  });
  let nc: NatsConnection | undefined;
  try {
    nc = await connectNats(config, 'monitor', FLEET_BIN, log, { once: true });
    const report = await fleetReport(nc, config, log);
    io.stdout(config.json ? formatJson(report) : formatTable(report));
    return 0;
  } catch (err) {
    const e = SysboxError.from(err);
    const where = nc ? '' : ` at ${config.natsUrl}`;
    io.stderr(`${FLEET_BIN}: cannot read the fleet${where}: ${e.message}\n`);
    log.debug({ err }, 'inventory failed');
    return 1;
  } finally {
    await nc?.close().catch(() => undefined);
  }
}
