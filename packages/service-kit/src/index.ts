export {
  boolOption,
  commonOptions,
  helpText,
  option,
  parseConfig,
  type CommonConfig,
  type ConfigOf,
  type OptionSpec,
  type OptionSpecs,
} from './config.js';
export { createLogger, silentLogger, type Logger, type LoggerSettings } from './logger.js';
export {
  startMicroService,
  type MicroEndpoint,
  type MicroService,
  type MicroServiceConfig,
} from './micro.js';
export {
  handle,
  processRequest,
  serve,
  type Binding,
  type Handler,
  type Outcome,
  type RequestContext,
  type ServeOptions,
} from './serve.js';
export { createServiceClient, type CallOptions, type ServiceClient } from './client.js';
export {
  connectNats,
  notifySupervisor,
  defineApp,
  type NatsClientConfig,
  packageVersion,
  runDaemon,
  serveMetrics,
  type MetricsEndpoint,
  type AppSpec,
  type DaemonConfig,
  type DaemonContext,
  type DaemonSpec,
  type Stoppable,
} from './daemon.js';
export {
  ERROR_CODE_HEADER,
  ERROR_HEADER,
  REQUEST_ID_HEADER,
  decodeJson,
  encodeJson,
  errorFromReply,
  errorReply,
} from './wire.js';
export { LIST_DEFAULT_LIMIT, LIST_MAX_BYTES, allPages, pageOf } from './page.js';
export { createKeyedLock, type KeyedLock } from './keyed-lock.js';
export { withinTime } from './time-bound.js';
