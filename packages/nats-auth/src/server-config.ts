/**
 * The nats-server configuration: one account (SYSBOX) with JetStream limits, one user per
 * identity and node set, each with its permissions, and server-wide limits. Written as JSON,
 * which nats-server's configuration parser reads, so no value needs hand quoting.
 */
import { permissionsFor, type NodeScope, type UserPermissions } from './permissions.js';
import type { Identity } from './credentials.js';

export const ACCOUNT = 'SYSBOX';

/** Limits that keep a misbehaving or hostile client from exhausting the host. */
export const SERVER_LIMITS = {
  max_connections: 256,
  /** Also the largest KV value or reply; list replies are kept under it. */
  max_payload: 1024 * 1024,
  max_pending: 64 * 1024 * 1024,
  max_subscriptions: 1000,
  max_control_line: 4096,
};

/** The account's JetStream budget: every bucket together can never take more than this. */
export const ACCOUNT_JETSTREAM_LIMITS = {
  max_memory: 64 * 1024 * 1024,
  max_file: 2 * 1024 * 1024 * 1024,
  max_streams: 16,
  max_consumers: 64,
};

export interface User {
  nkey: string;
  permissions: UserPermissions;
}

/** The users for a set of identities acting for `nodes`. */
export function usersFor(identities: readonly Identity[], nodes: NodeScope): User[] {
  return identities.map((id) => ({ nkey: id.publicKey, permissions: permissionsFor(id.name, nodes) }));
}

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** Clients' CA: with it, the server asks for and verifies client certificates. */
  caFile?: string;
}

/** A JetStream cluster on routes authenticated with a shared secret (nats-server 2.9 route auth). */
export interface ClusterOptions {
  name: string;
  host?: string;
  port: number;
  /** Every member's route address, `host:port` (this server's own is ignored by the server). */
  routes: readonly string[];
  /** The route password (see ensureRouteSecret): only members that hold it join. */
  secret: string;
}

export const ROUTE_USER = 'sysbox-route';

export interface ServerConfigOptions {
  users: readonly User[];
  host?: string;
  port?: number;
  /** JetStream store; JetStream is off without it. */
  storeDir?: string;
  serverName?: string;
  tls?: TlsFiles;
  cluster?: ClusterOptions;
}

export function renderServerConfig(opts: ServerConfigOptions): string {
  const config: Record<string, unknown> = {
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 4222,
    ...(opts.serverName ? { server_name: opts.serverName } : {}),
    ...SERVER_LIMITS,
    ...(opts.storeDir
      ? {
          jetstream: {
            store_dir: opts.storeDir,
            max_memory_store: ACCOUNT_JETSTREAM_LIMITS.max_memory,
            max_file_store: ACCOUNT_JETSTREAM_LIMITS.max_file,
          },
        }
      : {}),
    ...(opts.tls
      ? {
          tls: {
            cert_file: opts.tls.certFile,
            key_file: opts.tls.keyFile,
            ...(opts.tls.caFile ? { ca_file: opts.tls.caFile, verify: true } : {}),
          },
        }
      : {}),
    ...(opts.cluster
      ? {
          cluster: {
            name: opts.cluster.name,
            host: opts.cluster.host ?? '127.0.0.1',
            port: opts.cluster.port,
            authorization: { user: ROUTE_USER, password: opts.cluster.secret },
            routes: opts.cluster.routes.map((r) => `nats-route://${ROUTE_USER}:${opts.cluster!.secret}@${r}`),
          },
        }
      : {}),
    accounts: {
      [ACCOUNT]: {
        ...(opts.storeDir ? { jetstream: ACCOUNT_JETSTREAM_LIMITS } : {}),
        users: opts.users,
      },
    },
  };
  const secret = opts.cluster ? 'the route secret (keep it 0600)' : 'no secret';
  return `# Written by sysbox-nats-auth: public keys and permissions, ${secret}.\n${JSON.stringify(config, null, 2)}\n`;
}
