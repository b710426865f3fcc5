/** sysbox-gateway as data: what its bin, the all-in-one bin and benches start. */
import { defineApp } from '@sysbox-mgr-ts/service-kit';
import { gatewayOptions } from './flags.js';
import { startGateway } from './gateway.js';

export const gatewayApp = defineApp({
  name: 'sysbox-gateway',
  identity: 'gateway',
  about: "sysbox-mgr's gRPC protocol for sysbox-runc, coordinating the sysbox services over NATS",
  options: gatewayOptions,
  start: ({ config, nc, log, metrics }) => startGateway({ nc, settings: config, log, metrics }),
});
