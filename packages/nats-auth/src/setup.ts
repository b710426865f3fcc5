/** Credentials plus the server configuration that admits them, written together in one directory. */
import { randomBytes } from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ensureCredentials, readPrivateFile, type Identity } from './credentials.js';
import type { NodeScope } from './permissions.js';
import { renderServerConfig, usersFor, type ClusterOptions, type TlsFiles } from './server-config.js';

/**
 * The password cluster members use on their routes, made once per credentials directory and
 * copied to every member's (it must be the same everywhere). Not an nkey: 2.9 routes take a
 * user and password (or TLS).
 */
export function ensureRouteSecret(dir: string): string {
  const file = join(dir, 'route.secret');
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
}

export interface ServerSetup {
  configFile: string;
  identities: Identity[];
}

export function writeServerSetup(opts: ServerSetupOptions): ServerSetup {
  const identities = ensureCredentials(opts.dir);
  const configFile = join(opts.dir, opts.configName ?? 'nats-server.conf');
  const text = renderServerConfig({
    users: usersFor(identities, opts.nodes),
    host: opts.host,
    port: opts.port,
    storeDir: opts.storeDir,
    serverName: opts.serverName,
    tls: opts.tls,
    cluster: opts.cluster ? { ...opts.cluster, secret: ensureRouteSecret(opts.dir) } : undefined,
  });
  // Written whole or not at all: a server (re)started meanwhile never reads half a file.
  const tmp = `${configFile}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, configFile);
  return { configFile, identities };
}
