/**
 * Across hosts the bus runs over TLS: the client verifies the server's certificate against a CA
 * it is given, and a server with a client CA admits only clients with a certificate it signed.
 * Certificates are made here with openssl; the server is the real nats-server.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { startNatsServer, type NatsServer } from './index.js';

const openssl = (args: string[]) => run('openssl', args, { timeout: 30_000 });

async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  await openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '1',
    '-subj',
    `/CN=${name}`,
  ]);
  return { cert, key };
}

async function makeLeaf(
  dir: string,
  name: string,
  ca: { cert: string; key: string },
  ext: string,
): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const extFile = join(dir, `${name}.ext`);
  writeFileSync(extFile, `${ext}\n`);
  await openssl([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    `/CN=${name}`,
  ]);
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-out',
    cert,
    '-days',
    '1',
    '-extfile',
    extFile,
  ]);
  return { cert, key };
}

describe('TLS between daemons and nats-server', () => {
  let dir: string;
  let ca: { cert: string; key: string };
  let server: { cert: string; key: string };
  let client: { cert: string; key: string };
  const servers: NatsServer[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nats-tls-'));
    ca = await makeCa(dir, 'ca');
    server = await makeLeaf(dir, 'server', ca, 'subjectAltName=IP:127.0.0.1,DNS:localhost');
    client = await makeLeaf(dir, 'client', ca, 'extendedKeyUsage=clientAuth');
  });
  afterAll(async () => {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('verifies the server against the given CA, and refuses a server it cannot verify', async () => {
    const ns = await startNatsServer({
      jetstream: false,
      tls: { certFile: server.cert, keyFile: server.key },
    });
    servers.push(ns);
    const nc = await ns.connect('operator', { tls: { caFile: ca.cert } });
    expect(nc.info?.tls_required).toBe(true);
    await nc.close();
    // No CA given: the self-made CA is unknown to the system store.
    await expect(ns.connect('operator', { tls: {}, reconnect: false })).rejects.toThrow(/certificate/i);
  });

  it('with a client CA, admits only clients with a certificate it signed (and their nkey still checked)', async () => {
    const ns = await startNatsServer({
      jetstream: false,
      tls: { certFile: server.cert, keyFile: server.key, caFile: ca.cert },
    });
    servers.push(ns);
    await expect(ns.connect('operator', { tls: { caFile: ca.cert }, reconnect: false })).rejects.toThrow();
    const nc = await ns.connect('gateway', {
      tls: { caFile: ca.cert, certFile: client.cert, keyFile: client.key },
    });
    expect(nc.isClosed()).toBe(false);
    await nc.close();
  });

  it("carries a leaf host's connection to the hub over TLS, the hub verified against the given CA", async () => {
    const hub = await startNatsServer({
      jetstream: false,
      tls: { certFile: server.cert, keyFile: server.key },
      auth: { nodes: ['host-a'] },
      hub: {},
    });
    servers.push(hub);
    const leaf = await startNatsServer({
      auth: { dir: hub.credentialsDir, nodes: ['host-a'] },
      leaf: { hubUrls: [hub.leafUrl!], hubTlsCa: ca.cert },
    });
    servers.push(leaf);
    const vol = await leaf.connect('vol-mgr');
    vol.subscribe('sysbox.host-a.vol.list', { callback: (_, m) => void m.respond('{"volumes":[]}') });
    await vol.flush();
    const monitor = await hub.connect('monitor', { tls: { caFile: ca.cert } });
    try {
      // Until the leaf connection is up (bounded): before it, nobody answers on the hub.
      let answer = '';
      for (const end = Date.now() + 10_000; !answer && Date.now() < end;) {
        answer = await monitor.request('sysbox.host-a.vol.list', '{}', { timeout: 500 }).then(
          (m) => m.string(),
          () => '',
        );
        if (!answer) await new Promise((r) => setTimeout(r, 50));
      }
      expect(answer).toBe('{"volumes":[]}');
      expect(leaf.logs()).toMatch(/Leafnode connection created/);
    } finally {
      await monitor.close();
      await vol.close();
    }
  });
});
