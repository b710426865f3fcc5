export {
  permissionsFor,
  bucketPermissions,
  fleetSubjects,
  leafPermissions,
  readOnlySubjects,
  type NodeScope,
  type UserPermissions,
} from './permissions.js';
export {
  CredentialsError,
  DEFAULT_CREDENTIALS_DIR,
  authenticatorFromFile,
  credentialsFile,
  ensureCredentials,
  readPrivateFile,
  type Identity,
} from './credentials.js';
export {
  ACCOUNT,
  ACCOUNT_JETSTREAM_LIMITS,
  FLEET_ACCOUNT,
  leafUserOf,
  ROUTE_USER,
  SERVER_LIMITS,
  renderServerConfig,
  usersFor,
  type ClusterOptions,
  type HubOptions,
  type LeafOptions,
  type ServerConfigOptions,
  type TlsFiles,
  type User,
} from './server-config.js';
export { clientAuthOptions, type ClientAuth, type ClientTls } from './client.js';
export {
  ensureLeafSecret,
  ensureRouteSecret,
  leafSecretFile,
  writeServerSetup,
  type ServerSetup,
  type ServerSetupOptions,
} from './setup.js';
