import { createWriteStream } from 'node:fs';
import { packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { gatewayApp } from './app.js';
import { normalizeArgv } from './flags.js';

await runDaemon(
  {
    ...gatewayApp,
    version: packageVersion(import.meta.url),
    logTo: (config) => ({
      format: config.logFormat,
      destination: config.log ? createWriteStream(config.log, { flags: 'a', mode: 0o600 }) : undefined,
    }),
  },
  normalizeArgv(process.argv.slice(2)),
);
