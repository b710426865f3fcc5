import { createWriteStream } from 'node:fs';
import { createLogger, packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { gatewayOptions, normalizeArgv } from './flags.js';
import { startGateway } from './gateway.js';

await runDaemon(
  {
    name: 'sysbox-gateway',
    version: packageVersion(import.meta.url),
    about: "sysbox-mgr's gRPC protocol for sysbox-runc, coordinating the sysbox services over NATS",
    options: gatewayOptions,
    start: async ({ config, nc, log, version }) => {
      const appLog = config.log
        ? createLogger({
            service: 'sysbox-gateway',
            node: config.node,
            version,
            level: config.logLevel,
            destination: createWriteStream(config.log, { flags: 'a', mode: 0o600 }),
          })
        : log;
      return startGateway({ nc, settings: config, log: appLog });
    },
  },
  normalizeArgv(process.argv.slice(2)),
);
