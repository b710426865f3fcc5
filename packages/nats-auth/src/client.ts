/**
 * How a client of ours connects as an identity: its authenticator (from a credentials file that
 * passed the permission checks), its own inbox prefix, and TLS when the server is remote.
 */
import type { ConnectionOptions } from '@nats-io/nats-core';
import { inboxPrefixOf, type IdentityName } from '@sysbox-mgr-ts/contracts';
import { authenticatorFromFile } from './credentials.js';

export interface ClientTls {
  /** CA that signed the server's certificate; set, the server is verified against it. */
  caFile?: string;
  /** Client certificate and key, for servers that ask for one. */
  certFile?: string;
  keyFile?: string;
}

export interface ClientAuth {
  identity: IdentityName;
  /** Credentials file; undefined connects without credentials (only to a server that allows it). */
  credentialsFile?: string | undefined;
  tls?: ClientTls | undefined;
}

export function clientAuthOptions(
  auth: ClientAuth,
): Pick<ConnectionOptions, 'authenticator' | 'inboxPrefix' | 'tls'> {
  const tls = auth.tls && (auth.tls.caFile || auth.tls.certFile) ? { ...auth.tls } : undefined;
  return {
    inboxPrefix: inboxPrefixOf(auth.identity),
    ...(auth.credentialsFile ? { authenticator: authenticatorFromFile(auth.credentialsFile) } : {}),
    ...(tls ? { tls } : {}),
  };
}
