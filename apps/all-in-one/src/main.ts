import {
  commonOptions,
  createLogger,
  helpText,
  notifySupervisor,
  packageVersion,
  serveMetrics,
  type MetricsEndpoint,
} from '@sysbox-mgr-ts/service-kit';
import { APPS, allInOneOptions, configure, startApps } from './all-in-one.js';

const version = packageVersion(import.meta.url);
const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  const sections = Object.values(APPS).map((a) => helpText(a.options, `${a.name}: ${a.about}`));
  process.stdout.write(
    `${helpText({ ...allInOneOptions, ...commonOptions }, `sysbox-mgr-ts ${version}: chosen sysbox services and the gateway in one process`)}\n${sections.join('\n')}`,
  );
  process.exit(0);
}
let plan;
try {
  plan = configure(argv, process.env);
} catch (err) {
  process.stderr.write(`sysbox-mgr-ts: ${(err as Error).message}\nTry --help.\n`);
  process.exit(2);
}
const first = plan.apps[0]!.config;
const log = createLogger({ service: 'sysbox-mgr-ts', node: first.node, version, level: first.logLevel });
process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
let running;
let metrics: MetricsEndpoint | undefined;
try {
  // One registry and one listener for every app (--metrics-address is common to all of them).
  if (plan.metricsAddress) metrics = await serveMetrics(plan.metricsAddress, log);
  running = await startApps(plan, log, version, metrics);
} catch (err) {
  log.fatal({ err }, 'start failed');
  log.flush();
  setTimeout(() => process.exit(1), 200).unref();
}
if (running) {
  log.info({ apps: running.apps }, 'started');
  notifySupervisor('READY=1', process.env, log);
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    notifySupervisor('STOPPING=1', process.env, log);
    await running.stop();
    await metrics?.stop();
    log.info('stopped');
    log.flush(() => process.exit());
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const)
    process.once(signal, () => void stop(signal));
}
