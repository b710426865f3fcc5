import {
  chmodSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { IDENTITY_NAMES } from '@sysbox-mgr-ts/contracts';
import {
  CredentialsError,
  authenticatorFromFile,
  credentialsFile,
  ensureCredentials,
  fleetSubjects,
  leafPermissions,
  leafSecretFile,
  permissionsFor,
  readPrivateFile,
  renderServerConfig,
  usersFor,
  writeServerSetup,
} from './index.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'nats-auth-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('ensureCredentials', () => {
  it('makes one 0600 seed per identity in a 0700 directory and keeps them on the next run', () => {
    const dir = join(tempDir(), 'creds');
    const first = ensureCredentials(dir);
    expect(first.map((i) => i.name)).toEqual(IDENTITY_NAMES);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const id of first) {
      expect(lstatSync(id.file).mode & 0o777).toBe(0o600);
      expect(readFileSync(id.file, 'utf8')).toMatch(/^SU[A-Z2-7]+\n$/);
      expect(id.publicKey).toMatch(/^U[A-Z2-7]{55}$/);
    }
    expect(new Set(first.map((i) => i.publicKey)).size).toBe(first.length);
    const again = ensureCredentials(dir);
    expect(again.map((i) => i.publicKey)).toEqual(first.map((i) => i.publicKey));
  });

  it('refuses a credentials directory others can enter', () => {
    const dir = tempDir();
    chmodSync(dir, 0o755);
    expect(() => ensureCredentials(dir)).toThrow(/open to group or others \(mode 0755\)/);
  });
});

describe('readPrivateFile', () => {
  it('refuses a file group or others can read, naming the mode but not the content', () => {
    const dir = tempDir();
    const [gw] = ensureCredentials(dir, ['gateway']);
    chmodSync(gw!.file, 0o640);
    let message = '';
    try {
      readPrivateFile(gw!.file);
    } catch (err) {
      expect(err).toBeInstanceOf(CredentialsError);
      message = (err as Error).message;
    }
    expect(message).toContain('mode 0640');
    expect(message).not.toContain(readFileSync(gw!.file, 'utf8').trim());
  });

  it('refuses a symlink (a planted link could point at anything)', () => {
    const dir = tempDir();
    const [gw] = ensureCredentials(dir, ['gateway']);
    const link = join(dir, 'link.nk');
    symlinkSync(gw!.file, link);
    expect(() => readPrivateFile(link)).toThrow(/ELOOP/);
  });

  it('refuses a file that holds no nkey seed', () => {
    const file = join(tempDir(), 'bad.nk');
    writeFileSync(file, 'not a seed\n', { mode: 0o600 });
    expect(() => authenticatorFromFile(file)).toThrow(/does not hold an nkey user seed/);
  });
});

describe('permissionsFor', () => {
  it('lets a service subscribe to its own subjects only, and use only its own bucket', () => {
    const p = permissionsFor('vol-mgr', ['host1']);
    expect(p.subscribe.allow).toContain('sysbox.host1.vol.>');
    expect(p.subscribe.allow.some((s) => s.includes('subid') || s === '>' || s.startsWith('_INBOX.'))).toBe(
      false,
    );
    expect(p.publish.allow).toContain('$KV.sysbox-vol.host1.>');
    expect(
      p.publish.allow.filter(
        (s) => s.includes('STREAM.DELETE') || s.includes('PURGE') || s.includes('STREAM.NAMES'),
      ),
    ).toEqual([]);
    expect(p.publish.allow.filter((s) => s.includes('CONSUMER') && !s.includes('.KV_sysbox-vol'))).toEqual(
      [],
    );
    // A record's delete removes one message of its own stream, nothing else (#25).
    expect(p.publish.allow.filter((s) => s.includes('MSG.DELETE'))).toEqual([
      '$JS.API.STREAM.MSG.DELETE.KV_sysbox-vol',
    ]);
    expect(
      p.publish.allow.every(
        (s) =>
          s === '$JS.API.INFO' ||
          s.includes('sysbox-vol') ||
          /^_INBOX_(gateway|operator|monitor)\.>$/.test(s),
      ),
    ).toBe(true);
    expect(p.allow_responses).toBe(true);
  });

  it('gives the monitor discovery, list and summary subjects, and no mutating subject', () => {
    const p = permissionsFor('monitor', ['host1']);
    expect(p.publish.allow).toEqual(
      expect.arrayContaining([
        '$SRV.>',
        'sysbox.host1.subid.list',
        'sysbox.host1.vol.list',
        'sysbox.host1.rootfs.list',
        'sysbox.host1.shiftfs.list',
        'sysbox.host1.subid.summary',
        'sysbox.host1.vol.summary',
        'sysbox.host1.rootfs.summary',
        'sysbox.host1.shiftfs.summary',
      ]),
    );
    expect(p.publish.allow.filter((s) => s.startsWith('sysbox.') && !/\.(list|summary)$/.test(s))).toEqual(
      [],
    );
  });

  it('lets the gateway call services but never serve them', () => {
    const p = permissionsFor('gateway', ['host1']);
    expect(p.publish.allow).toContain('sysbox.host1.subid.>');
    expect(p.subscribe.allow).toEqual(['_INBOX_gateway.>']);
  });
});

describe('server configuration', () => {
  it('holds public keys and permissions only, in a 0600 file', () => {
    const dir = tempDir();
    const setup = writeServerSetup({ dir, nodes: ['n1'], storeDir: '/tmp/js' });
    expect(lstatSync(setup.configFile).mode & 0o777).toBe(0o600);
    const text = readFileSync(setup.configFile, 'utf8');
    for (const id of setup.identities) {
      expect(text).toContain(id.publicKey);
      expect(text).not.toContain(readFileSync(credentialsFile(dir, id.name), 'utf8').trim());
    }
    const json = JSON.parse(text.slice(text.indexOf('{')));
    expect(json.accounts.SYSBOX.users).toHaveLength(IDENTITY_NAMES.length);
    expect(json.accounts.SYSBOX.jetstream.max_file).toBeGreaterThan(0);
    expect(json.max_payload).toBe(1024 * 1024);
  });

  it('renders TLS with client verification only when a client CA is given', () => {
    const users = usersFor([], ['n1']);
    const noCa = JSON.parse(
      renderServerConfig({ users, tls: { certFile: '/c', keyFile: '/k' } }).replace(/^#.*\n/, ''),
    );
    expect(noCa.tls).toEqual({ cert_file: '/c', key_file: '/k' });
    const withCa = JSON.parse(
      renderServerConfig({ users, tls: { certFile: '/c', keyFile: '/k', caFile: '/ca' } }).replace(
        /^#.*\n/,
        '',
      ),
    );
    expect(withCa.tls.verify).toBe(true);
  });
});

describe('hub and leaf configurations', () => {
  const configOf = (file: string) => {
    const text = readFileSync(file, 'utf8');
    return JSON.parse(text.slice(text.indexOf('{')));
  };

  it('leaves the single-server configuration as it was: no leaf connection, no domain, no FLEET', () => {
    const json = configOf(
      writeServerSetup({ dir: tempDir(), nodes: ['n1'], storeDir: '/tmp/js' }).configFile,
    );
    expect(json.leafnodes).toBeUndefined();
    expect(json.jetstream.domain).toBeUndefined();
    expect(Object.keys(json.accounts)).toEqual(['SYSBOX']);
  });

  it('admits on a hub only operator, monitor and one leaf user per host, each kept to its node', () => {
    const dir = tempDir();
    const setup = writeServerSetup({ dir, nodes: ['h1', 'h2'], storeDir: '/tmp/js', hub: { port: 7422 } });
    const json = configOf(setup.configFile);
    expect(json.leafnodes).toEqual({ host: '127.0.0.1', port: 7422 });
    const users = json.accounts.SYSBOX.users as { nkey?: string; user?: string; permissions: unknown }[];
    const byKey = new Map(setup.identities.map((i) => [i.publicKey, i.name]));
    expect(users.filter((u) => u.nkey).map((u) => byKey.get(u.nkey!))).toEqual(['operator', 'monitor']);
    const leafH1 = users.find((u) => u.user === 'leaf-h1')!;
    expect(leafH1.permissions).toEqual(leafPermissions('h1'));
    expect(leafPermissions('h1').publish.allow).toEqual(['_INBOX_monitor.>']);
    expect(leafPermissions('h1').subscribe.allow).toEqual([
      '$SRV.>',
      'sysbox.h1.subid.list',
      'sysbox.h1.subid.summary',
      'sysbox.h1.vol.list',
      'sysbox.h1.vol.summary',
      'sysbox.h1.shiftfs.list',
      'sysbox.h1.shiftfs.summary',
      'sysbox.h1.rootfs.list',
      'sysbox.h1.rootfs.summary',
    ]);
    // Each host's password in a 0600 file of its own, to copy to that host only.
    for (const node of ['h1', 'h2']) expect(lstatSync(leafSecretFile(dir, node)).mode & 0o777).toBe(0o600);
    expect(() => writeServerSetup({ dir, nodes: ['*'], hub: { port: 7422 } })).toThrow(/node names/);
  });

  it('gives a leaf host its own domain and binds its leaf connection to an account that imports only its fleet subjects', () => {
    const dir = tempDir();
    expect(() =>
      writeServerSetup({ dir, nodes: ['h1'], storeDir: '/tmp/js', leaf: { hubUrls: ['10.0.0.1:7422'] } }),
    ).toThrow(/leaf-h1.secret is missing: copy it from the hub/);
    writeServerSetup({ dir, nodes: ['h1', 'h2'], hub: { port: 7422 } });
    const json = configOf(
      writeServerSetup({
        dir,
        nodes: ['h1'],
        storeDir: '/tmp/js',
        leaf: { hubUrls: ['10.0.0.1:7422', '10.0.0.2:7422'] },
        configName: 'leaf.conf',
      }).configFile,
    );
    expect(json.jetstream.domain).toBe('h1');
    const secret = readFileSync(leafSecretFile(dir, 'h1'), 'utf8').trim();
    expect(json.leafnodes.remotes).toEqual([
      {
        urls: [`nats-leaf://leaf-h1:${secret}@10.0.0.1:7422`, `nats-leaf://leaf-h1:${secret}@10.0.0.2:7422`],
        account: 'FLEET',
      },
    ]);
    expect(json.accounts.FLEET.users).toBeUndefined();
    expect(
      json.accounts.FLEET.imports.map((i: { service: { subject: string } }) => i.service.subject),
    ).toEqual(fleetSubjects('h1'));
    expect(json.accounts.SYSBOX.exports[0]).toEqual({ service: '$SRV.>', response_type: 'stream' });
    // The host's daemons are all admitted locally, scoped to its node.
    expect(json.accounts.SYSBOX.users).toHaveLength(IDENTITY_NAMES.length);
    expect(JSON.stringify(json.accounts.SYSBOX.users)).not.toContain('sysbox.h2.');
    expect(() =>
      writeServerSetup({ dir, nodes: ['h1', 'h2'], leaf: { hubUrls: ['10.0.0.1:7422'] } }),
    ).toThrow(/exactly one node/);
  });
});
