import { createWriteStream } from 'node:fs';
import { packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { gatewayOptions, normalizeArgv } from './flags.js';
import { startGateway } from './gateway.js';

await runDaemon(
  {
    name: 'sysbox-gateway',
    identity: 'gateway',
    version: packageVersion(import.meta.url),
    about: "sysbox-mgr's gRPC protocol for sysbox-runc, coordinating the sysbox services over NATS",
    options: gatewayOptions,
    logTo: (config) => ({
      format: config.logFormat,
      destination: config.log ? createWriteStream(config.log, { flags: 'a', mode: 0o600 }) : undefined,
    }),
    start: ({ config, nc, log }) => startGateway({ nc, settings: config, log }),
  },
  normalizeArgv(process.argv.slice(2)),
);
