/**
 * The nats-server configuration: one account (SYSBOX) with JetStream limits, one user per
 * identity and node set, each with its permissions, and server-wide limits. Written as JSON,
 * which nats-server's configuration parser reads, so no value needs hand quoting.
 */
import {
  fleetSubjects,
  leafPermissions,
  permissionsFor,
  type NodeScope,
  type UserPermissions,
} from './permissions.js';
import type { Identity } from './credentials.js';

export const ACCOUNT = 'SYSBOX';
/**
 * On a leaf host, the account its leaf connection to the hub is bound to: it has no user and no
 * JetStream, only imports of the fleet subjects from SYSBOX, so whatever the hub sends can reach
 * nothing else of the host.
 */
export const FLEET_ACCOUNT = 'FLEET';

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

/** The hub's user name for a leaf host's connection. */
export function leafUserOf(node: string): string {
  return `leaf-${node}`;
}

/** A hub that leaf hosts connect to (one server or every member of a cluster). */
export interface HubOptions {
  host?: string;
  /** Leaf connection port (nats-server's default is 7422). */
  port: number;
  /** Each leaf host's node and the password its leaf connection presents (see ensureLeafSecret). */
  leaves: readonly { node: string; secret: string }[];
}

/** A leaf host: its own server and JetStream domain, with a leaf connection to the hub. */
export interface LeafOptions {
  node: string;
  /** The hub members' leaf addresses, `host:port`. */
  hubUrls: readonly string[];
  secret: string;
  /** CA of the hub's certificate: the leaf connection then uses TLS and verifies the hub. */
  hubTlsCa?: string;
}

export interface ServerConfigOptions {
  users: readonly User[];
  host?: string;
  port?: number;
  /** JetStream store; JetStream is off without it. */
  storeDir?: string;
  serverName?: string;
  tls?: TlsFiles;
  cluster?: ClusterOptions;
  /** JetStream domain (a hub's, or a leaf host's own). */
  jetstreamDomain?: string;
  /** Listen for leaf hosts' connections (with `tls`, over TLS). */
  hub?: HubOptions;
  /** Connect to a hub as a leaf host. */
  leaf?: LeafOptions;
}

function leafRemote(leaf: LeafOptions): Record<string, unknown> {
  const scheme = leaf.hubTlsCa ? 'tls' : 'nats-leaf';
  return {
    urls: leaf.hubUrls.map((u) => `${scheme}://${leafUserOf(leaf.node)}:${leaf.secret}@${u}`),
    account: FLEET_ACCOUNT,
    ...(leaf.hubTlsCa ? { tls: { ca_file: leaf.hubTlsCa } } : {}),
  };
}

/** SYSBOX exports the fleet subjects, FLEET (the leaf connection's account) imports them. */
function fleetAccounts(node: string): { exports: unknown[]; fleet: Record<string, unknown> } {
  const subjects = fleetSubjects(node);
  return {
    // `$SRV` requests are answered by every service instance: a stream of replies.
    exports: subjects.map((subject) =>
      subject.startsWith('$SRV.') ? { service: subject, response_type: 'stream' } : { service: subject },
    ),
    fleet: { imports: subjects.map((subject) => ({ service: { account: ACCOUNT, subject } })) },
  };
}

export function renderServerConfig(opts: ServerConfigOptions): string {
  if (opts.hub && opts.leaf) throw new Error('a server is a hub or a leaf host, not both');
  const fleet = opts.leaf ? fleetAccounts(opts.leaf.node) : undefined;
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
            ...(opts.jetstreamDomain ? { domain: opts.jetstreamDomain } : {}),
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
    ...(opts.hub
      ? {
          leafnodes: {
            host: opts.hub.host ?? opts.host ?? '127.0.0.1',
            port: opts.hub.port,
            ...(opts.tls ? { tls: { cert_file: opts.tls.certFile, key_file: opts.tls.keyFile } } : {}),
          },
        }
      : {}),
    ...(opts.leaf ? { leafnodes: { remotes: [leafRemote(opts.leaf)] } } : {}),
    accounts: {
      [ACCOUNT]: {
        ...(opts.storeDir ? { jetstream: ACCOUNT_JETSTREAM_LIMITS } : {}),
        users: [
          ...opts.users,
          // Leaf hosts authenticate with a password: nats-server 2.9's leaf remotes take a user and
          // password or a JWT, not an nkey seed. Their permissions keep each to its own node.
          ...(opts.hub?.leaves ?? []).map((l) => ({
            user: leafUserOf(l.node),
            password: l.secret,
            permissions: leafPermissions(l.node),
          })),
        ],
        ...(fleet ? { exports: fleet.exports } : {}),
      },
      ...(fleet ? { [FLEET_ACCOUNT]: fleet.fleet } : {}),
    },
  };
  const secrets = [
    ...(opts.cluster ? ['the route secret'] : []),
    ...(opts.hub?.leaves.length ? ["the leaf hosts' passwords"] : []),
    ...(opts.leaf ? ["this leaf host's password"] : []),
  ];
  const secret = secrets.length > 0 ? `${secrets.join(' and ')} (keep it 0600)` : 'no secret';
  return `# Written by sysbox-nats-auth: public keys and permissions, ${secret}.\n${JSON.stringify(config, null, 2)}\n`;
}
