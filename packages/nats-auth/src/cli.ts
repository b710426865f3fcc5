/**
 * sysbox-nats-auth init: makes (or keeps) one credentials file per identity and writes the
 * nats-server configuration that admits them. Prints paths and public keys, never a seed.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_CREDENTIALS_DIR } from './credentials.js';
import { writeServerSetup } from './setup.js';

const USAGE = `Usage: sysbox-nats-auth init [options]

Makes one nkey credentials file per identity (subid-allocator, vol-mgr, shiftfs-mgr, rootfs-cloner,
gateway, operator, monitor) in --dir, 0600, keeping any that exist, and writes --dir/nats-server.conf
with each identity's permissions. Run as the user the daemons run as (root).

Options:
  --dir <path>         credentials directory (default ${DEFAULT_CREDENTIALS_DIR})
  --node <name>        node the identities act for; repeat for several; '*' for any (default: '*')
  --host <addr>        client listen address (default 127.0.0.1)
  --port <n>           client port (default 4222)
  --store-dir <path>   JetStream store (default /var/lib/sysbox-mgr-ts/jetstream)
  --server-name <name> server name (needed on a cluster)
  --tls-cert <file>    server certificate (with --tls-key); clients then connect with TLS
  --tls-key <file>     server key
  --tls-ca <file>      CA of client certificates: the server then requires and verifies them
  --cluster-name <n>   join a JetStream cluster of this name (needs --server-name, --cluster-port, --route)
  --cluster-port <n>   route port of this server
  --route <host:port>  a member's route address; repeat for every member (this one included)
  --config-name <f>    configuration file name in --dir (default nats-server.conf)
  --role <r>           single (default: one server or a cluster the daemons connect to), hub or leaf
  --leaf-port <n>      hub: port leaf hosts connect to (default 7422)
  --hub <host:port>    leaf: a hub member's leaf address; repeat for every member
  --hub-tls-ca <file>  leaf: CA of the hub's certificate (the leaf connection then uses TLS)
  --domain <name>      JetStream domain (leaf: default its --node; hub: none)

On a cluster, run init on one host, copy --dir (seeds and route.secret, 0600) to the others,
and run init there with that host's --server-name: the identities and the route secret must be
the same on every member.

Leaf hosts: run init --role hub on the hub with one --node per leaf host (it makes leaf-<node>.secret
for each and admits only operator, monitor and the leaf connections), copy the seeds and that
host's leaf-<node>.secret to each host, and run init --role leaf --node <host> --hub <addr> there:
the host's own server keeps its buckets in its own JetStream domain, and the hub reaches only its
discovery and list subjects.
`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string', default: DEFAULT_CREDENTIALS_DIR },
    node: { type: 'string', multiple: true },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '4222' },
    'store-dir': { type: 'string', default: '/var/lib/sysbox-mgr-ts/jetstream' },
    'server-name': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-ca': { type: 'string' },
    'cluster-name': { type: 'string' },
    'cluster-port': { type: 'string' },
    route: { type: 'string', multiple: true },
    'config-name': { type: 'string' },
    role: { type: 'string', default: 'single' },
    'leaf-port': { type: 'string', default: '7422' },
    hub: { type: 'string', multiple: true },
    'hub-tls-ca': { type: 'string' },
    domain: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

if (values.help || positionals[0] !== 'init') {
  process.stdout.write(USAGE);
  process.exit(values.help ? 0 : 2);
}
if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) {
  process.stderr.write('sysbox-nats-auth: --tls-cert and --tls-key go together\n');
  process.exit(2);
}
if (values['cluster-name'] && (!values['server-name'] || !values['cluster-port'] || !values.route?.length)) {
  process.stderr.write('sysbox-nats-auth: --cluster-name needs --server-name, --cluster-port and --route\n');
  process.exit(2);
}
if (!['single', 'hub', 'leaf'].includes(values.role)) {
  process.stderr.write(`sysbox-nats-auth: --role is single, hub or leaf, not ${values.role}\n`);
  process.exit(2);
}
if (values.role === 'leaf' && (values.node?.length !== 1 || !values.hub?.length)) {
  process.stderr.write('sysbox-nats-auth: --role leaf needs one --node and at least one --hub\n');
  process.exit(2);
}
if (values.role === 'hub' && !values.node?.length) {
  process.stderr.write('sysbox-nats-auth: --role hub needs a --node per leaf host\n');
  process.exit(2);
}
try {
  const setup = writeServerSetup({
    dir: values.dir,
    nodes: values.node ?? ['*'],
    host: values.host,
    port: Number(values.port),
    storeDir: values['store-dir'],
    serverName: values['server-name'],
    tls: values['tls-cert']
      ? { certFile: values['tls-cert'], keyFile: values['tls-key']!, caFile: values['tls-ca'] }
      : undefined,
    cluster: values['cluster-name']
      ? {
          name: values['cluster-name'],
          port: Number(values['cluster-port']),
          routes: values.route ?? [],
          host: values.host,
        }
      : undefined,
    configName: values['config-name'],
    hub:
      values.role === 'hub'
        ? { port: Number(values['leaf-port']), host: values.host, domain: values.domain }
        : undefined,
    leaf:
      values.role === 'leaf'
        ? { hubUrls: values.hub ?? [], domain: values.domain, hubTlsCa: values['hub-tls-ca'] }
        : undefined,
  });
  process.stdout.write(`server configuration: ${setup.configFile}\n`);
  for (const id of setup.identities)
    process.stdout.write(`${id.name.padEnd(16)} ${id.file}  ${id.publicKey}\n`);
} catch (err) {
  process.stderr.write(`sysbox-nats-auth: ${(err as Error).message}\n`);
  process.exit(1);
}
