/**
 * Credentials: one nkey seed file per identity in a directory of its own (root, 0700; files 0600).
 * nkeys rather than JWT: the server configuration then holds public keys only (it is not a
 * secret), there is no operator/account JWT chain or resolver to run, and nats-server 2.9 from
 * Debian takes them as they are. A JWT `.creds` file is accepted too, for deployments that
 * already run decentralized auth.
 */
import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { credsAuthenticator, nkeyAuthenticator, nkeys, type Authenticator } from '@nats-io/nats-core';
import { IDENTITY_NAMES, type IdentityName } from '@sysbox-mgr-ts/contracts';

/** Where `sysbox-nats-auth init` and the embedded default keep credentials. */
export const DEFAULT_CREDENTIALS_DIR = '/etc/sysbox-mgr-ts/nats';

export function credentialsFile(dir: string, identity: IdentityName): string {
  return join(dir, `${identity}.nk`);
}

export interface Identity {
  name: IdentityName;
  file: string;
  /** The nkey public key (U...): the only part the server configuration holds. */
  publicKey: string;
}

/** Refused credentials: the message names the file and the rule, never the content. */
export class CredentialsError extends Error {
  override name = 'CredentialsError';
}

/**
 * Makes the directory and a seed per identity where none exists yet; keeps existing ones (their
 * permissions checked). Returns every identity with its public key.
 */
export function ensureCredentials(
  dir: string,
  identities: readonly IdentityName[] = IDENTITY_NAMES,
): Identity[] {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkPrivate(dir, statSync(dir), 'directory');
  return identities.map((name) => {
    const file = credentialsFile(dir, name);
    let seed: string;
    try {
      seed = readPrivateFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      seed = new TextDecoder().decode(nkeys.createUser().getSeed());
      // wx: never overwrite a seed another process wrote meanwhile; 0600 from the first byte.
      writeFileSync(file, `${seed}\n`, { mode: 0o600, flag: 'wx' });
    }
    return { name, file, publicKey: publicKeyOf(seed.trim(), file) };
  });
}

function publicKeyOf(seed: string, file: string): string {
  try {
    return nkeys.fromSeed(new TextEncoder().encode(seed)).getPublicKey();
  } catch {
    throw new CredentialsError(`${file} does not hold an nkey user seed`);
  }
}

/**
 * Reads a credentials file after checking that only its owner can read it and that the owner is
 * this process's user: a seed others can read is a seed others have.
 */
export function readPrivateFile(file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new CredentialsError(`credentials ${file} is not a regular file`);
    checkPrivate(file, st, 'file');
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

function checkPrivate(path: string, st: { mode: number; uid: number }, what: string): void {
  const mode = st.mode & 0o777;
  if (mode & 0o077) {
    throw new CredentialsError(
      `credentials ${what} ${path} is open to group or others (mode ${mode.toString(8).padStart(4, '0')}); chmod go-rwx it`,
    );
  }
  const euid = process.geteuid?.();
  if (euid !== undefined && st.uid !== euid) {
    throw new CredentialsError(
      `credentials ${what} ${path} belongs to uid ${st.uid}, not to this process (uid ${euid})`,
    );
  }
}

const JWT_CREDS = /-----BEGIN NATS USER JWT-----/;

/** The authenticator for a credentials file: an nkey seed (ours) or a JWT `.creds` file. */
export function authenticatorFromFile(file: string): Authenticator {
  const text = readPrivateFile(file);
  if (JWT_CREDS.test(text)) return credsAuthenticator(new TextEncoder().encode(text));
  const seed = text.trim();
  publicKeyOf(seed, file);
  return nkeyAuthenticator(new TextEncoder().encode(seed));
}
