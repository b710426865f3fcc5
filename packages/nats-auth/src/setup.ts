/** Credentials plus the server configuration that admits them, written together in one directory. */
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ensureCredentials, type Identity } from './credentials.js';
import type { NodeScope } from './permissions.js';
import { renderServerConfig, usersFor, type TlsFiles } from './server-config.js';

export interface ServerSetupOptions {
  dir: string;
  /** Nodes the identities act for; `*` for any (tests, trusted clusters). */
  nodes: NodeScope;
  host?: string;
  port?: number;
  storeDir?: string;
  serverName?: string;
  tls?: TlsFiles;
}

export interface ServerSetup {
  configFile: string;
  identities: Identity[];
}

export function writeServerSetup(opts: ServerSetupOptions): ServerSetup {
  const identities = ensureCredentials(opts.dir);
  const configFile = join(opts.dir, 'nats-server.conf');
  const text = renderServerConfig({
    users: usersFor(identities, opts.nodes),
    host: opts.host,
    port: opts.port,
    storeDir: opts.storeDir,
    serverName: opts.serverName,
    tls: opts.tls,
  });
  // Written whole or not at all: a server (re)started meanwhile never reads half a file.
  const tmp = `${configFile}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, configFile);
  return { configFile, identities };
}
