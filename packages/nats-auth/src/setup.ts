/** Credentials plus the server configuration that admits them, written together in one directory. */
import { randomBytes } from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ensureCredentials, readPrivateFile, type Identity } from './credentials.js';
import type { NodeScope } from './permissions.js';
import { IDENTITY_NAMES, type IdentityName } from '@sysbox-mgr-ts/contracts';
import { renderServerConfig, usersFor, type ClusterOptions, type TlsFiles } from './server-config.js';

/**
 * The password cluster members use on their routes, made once per credentials directory and
 * copied to every member's (it must be the same everywhere). Not an nkey: 2.9 routes take a
 * user and password (or TLS).
 */
export function ensureRouteSecret(dir: string): string {
  return ensureSecret(join(dir, 'route.secret'));
}

/** The file of the password a leaf host's connection to the hub presents. */
export function leafSecretFile(dir: string, node: string): string {
  return join(dir, `leaf-${node}.secret`);
}

/**
 * A leaf host's password, made once by the hub's init for every leaf node and copied to that
 * host only (each host holds its own, never another's).
 */
export function ensureLeafSecret(dir: string, node: string): string {
  return ensureSecret(leafSecretFile(dir, node));
}

function ensureSecret(file: string): string {
  try {
    return readPrivateFile(file).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const secret = randomBytes(24).toString('hex');
    writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    return secret;
  }
}

export interface ServerSetupOptions {
  dir: string;
  /** Nodes the identities act for; `*` for any (tests, trusted clusters). */
  nodes: NodeScope;
  host?: string;
  port?: number;
  storeDir?: string;
  serverName?: string;
  tls?: TlsFiles;
  /** Cluster membership; the route secret is read from (or made in) `dir`. */
  cluster?: Omit<ClusterOptions, 'secret'>;
  /** File name of the configuration in `dir` (several servers of one host share the dir). */
  configName?: string;
  /**
   * A hub of leaf hosts (one server or each member of a cluster): it admits the leaf connections of
   * `nodes` on this port, and of our identities only `operator` and `monitor` (no daemon runs on
   * it). Leaf passwords are read from (or made in) `dir`.
   */
  hub?: { port: number; host?: string; domain?: string };
  /**
   * A leaf host (`nodes` is its one node): its JetStream domain (default: the node) holds its
   * buckets, and a leaf connection to the hub answers only discovery and the node's lists. Its
   * password must be the hub's, copied into `dir`.
   */
  leaf?: { hubUrls: readonly string[]; domain?: string; hubTlsCa?: string };
}

/** On a hub only the fleet's own tools connect: the NATS CLI as root and the read-only monitor. */
const HUB_IDENTITIES: readonly IdentityName[] = ['operator', 'monitor'];

export interface ServerSetup {
  configFile: string;
  identities: Identity[];
}

export function writeServerSetup(opts: ServerSetupOptions): ServerSetup {
  if (opts.hub && opts.leaf) throw new Error('a server is a hub or a leaf host, not both');
  if ((opts.hub || opts.leaf) && opts.nodes.includes('*'))
    throw new Error('a hub or a leaf host needs node names (--node), not "*"');
  if (opts.leaf && opts.nodes.length !== 1) throw new Error('a leaf host acts for exactly one node');
  if (opts.leaf && opts.leaf.hubUrls.length === 0) throw new Error("a leaf host needs the hub's address");
  // Every identity is made wherever init runs, so one directory copied to every host holds the same.
  const identities = ensureCredentials(opts.dir, IDENTITY_NAMES);
  const configFile = join(opts.dir, opts.configName ?? 'nats-server.conf');
  const leafNode = opts.leaf ? opts.nodes[0]! : undefined;
  const text = renderServerConfig({
    users: usersFor(
      opts.hub ? identities.filter((id) => HUB_IDENTITIES.includes(id.name)) : identities,
      opts.nodes,
    ),
    host: opts.host,
    port: opts.port,
    storeDir: opts.storeDir,
    serverName: opts.serverName,
    tls: opts.tls,
    cluster: opts.cluster ? { ...opts.cluster, secret: ensureRouteSecret(opts.dir) } : undefined,
    jetstreamDomain: opts.hub ? opts.hub.domain : (opts.leaf?.domain ?? leafNode),
    hub: opts.hub && {
      port: opts.hub.port,
      host: opts.hub.host,
      leaves: opts.nodes.map((node) => ({ node, secret: ensureLeafSecret(opts.dir, node) })),
    },
    leaf: opts.leaf && {
      node: leafNode!,
      hubUrls: opts.leaf.hubUrls,
      secret: readLeafSecret(opts.dir, leafNode!),
      hubTlsCa: opts.leaf.hubTlsCa,
    },
  });
  // Written whole or not at all: a server (re)started meanwhile never reads half a file.
  const tmp = `${configFile}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, configFile);
  return { configFile, identities };
}

function readLeafSecret(dir: string, node: string): string {
  const file = leafSecretFile(dir, node);
  try {
    return readPrivateFile(file).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    throw new Error(
      `${file} is missing: copy it from the hub's directory (init --role hub --node ${node} made it)`,
    );
  }
}
