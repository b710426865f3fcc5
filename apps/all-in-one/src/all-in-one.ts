/**
 * Several apps in one process: each keeps its own NATS connection under its own identity (so
 * permissions, subjects and state are exactly those of the split daemons, and splitting one out
 * later is a configuration change), its own config and a child logger. Services start before the
 * gateway, and stop after it.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import type { IdentityName } from '@sysbox-mgr-ts/contracts';
import { gatewayApp } from '@sysbox-mgr-ts/gateway';
import { DEFAULT_CREDENTIALS_DIR, credentialsFile } from '@sysbox-mgr-ts/nats-auth';
import { rootfsClonerApp } from '@sysbox-mgr-ts/rootfs-cloner';
import {
  commonOptions,
  connectNats,
  option,
  parseConfig,
  type AppSpec,
  type Logger,
  type MetricsEndpoint,
  type OptionSpecs,
  type Stoppable,
} from '@sysbox-mgr-ts/service-kit';
import { shiftfsMgrApp } from '@sysbox-mgr-ts/shiftfs-mgr';
import { subidAllocatorApp } from '@sysbox-mgr-ts/subid-allocator';
import { volMgrApp } from '@sysbox-mgr-ts/vol-mgr';
import { z } from 'zod';
import { splitArgv } from './argv.js';

/** In start order: the gateway asks the services at its start. */
export const APPS = {
  'subid-allocator': subidAllocatorApp,
  'vol-mgr': volMgrApp,
  'shiftfs-mgr': shiftfsMgrApp,
  'rootfs-cloner': rootfsClonerApp,
  gateway: gatewayApp,
} as const satisfies Partial<Record<IdentityName, AppSpec<OptionSpecs>>>;
export type AppName = keyof typeof APPS;
const APP_NAMES = Object.keys(APPS) as AppName[];

export const allInOneOptions = {
  only: option({
    flag: 'only',
    env: 'SYSBOX_ONLY',
    description: `comma-separated apps to run (default: all of ${APP_NAMES.join(', ')})`,
    schema: z
      .string()
      .default(APP_NAMES.join(','))
      .transform((s) =>
        s
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean),
      )
      .pipe(z.array(z.enum(APP_NAMES as [AppName, ...AppName[]])).min(1, 'name at least one app')),
  }),
  credsDir: option({
    flag: 'creds-dir',
    env: 'SYSBOX_CREDS_DIR',
    description:
      'directory with one owner-only credentials file per identity (<identity>.nk), as sysbox-nats-auth init makes it',
    schema: z.string().startsWith('/').default(DEFAULT_CREDENTIALS_DIR),
  }),
};

type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface StartedApps {
  apps: AppName[];
  stop(): Promise<void>;
}

/** Parses argv for the chosen apps; throws `invalid-request` listing every problem. */
export function configure(argv: readonly string[], env: Record<string, string | undefined>) {
  const specsOf = (names: readonly AppName[]) =>
    names.map((name) => ({ ...commonOptions, ...(APPS[name].options as OptionSpecs) }));
  // --only decides which apps' flags count: read it (and --creds-dir) first.
  const own = parseConfig(allInOneOptions, splitArgv(argv, allInOneOptions, specsOf(APP_NAMES)).own, env);
  if ('help' in own) throw new Error('unreachable: --help is handled before');
  const chosen = own.config.only;
  const specs = specsOf(chosen);
  const split = splitArgv(argv, allInOneOptions, specs);
  if (split.unknown.length > 0)
    throw new Error(`unknown option ${split.unknown.join(', ')} for ${chosen.join(', ')}`);
  const apps = chosen.map((name, i) => {
    const parsed = parseConfig(specs[i]!, split.perApp[i]!, env);
    if ('help' in parsed) throw new Error('unreachable: --help is handled before');
    return {
      name,
      config: parsed.config as Record<string, unknown> & {
        natsUrl: string;
        node: string;
        logLevel: LogLevel;
        natsCreds?: string;
        metricsAddress?: string;
      },
    };
  });
  // A common flag: every app has the same value, and the process serves one endpoint for all.
  return { credsDir: own.config.credsDir, metricsAddress: apps[0]!.config.metricsAddress, apps };
}

export async function startApps(
  plan: ReturnType<typeof configure>,
  log: Logger,
  version: string,
  /** The process's one metrics endpoint: each app records into it under its own `app` label. */
  metrics?: MetricsEndpoint,
): Promise<StartedApps> {
  const started: { name: AppName; nc: NatsConnection; app: Stoppable; log: Logger }[] = [];
  const stopAll = async (): Promise<void> => {
    for (const s of [...started].reverse()) {
      try {
        await s.app.stop();
        await s.nc.drain();
      } catch (err) {
        s.log.error({ err }, 'stop failed');
      }
    }
  };
  try {
    for (const { name, config } of plan.apps) {
      const spec = APPS[name] as AppSpec<OptionSpecs>;
      const appLog = log.child({ app: name });
      const natsCreds = config.natsCreds ?? credentialsFile(plan.credsDir, spec.identity);
      const nc = await connectNats(
        { ...config, natsCreds },
        spec.identity,
        `${spec.name}@${config.node}`,
        appLog,
      );
      const app = await spec.start({
        config: config as never,
        nc,
        log: appLog,
        version,
        metrics: metrics?.forApp(name),
      });
      await nc.flush();
      started.push({ name, nc, app, log: appLog });
      appLog.info('started');
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  return { apps: started.map((s) => s.name), stop: stopAll };
}
