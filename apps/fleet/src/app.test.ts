/**
 * sysbox-fleet against two simulated hosts on a real, authenticated nats-server (#28): each
 * host's services served through service-kit on their own identities, the command run with the
 * monitor identity's credentials, its table and JSON read back.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { SERVICE_IDENTITIES, type IdentityName, type ServiceContract } from '@sysbox-mgr-ts/contracts';
import { credentialsFile, ensureCredentials } from '@sysbox-mgr-ts/nats-auth';
import { silentLogger, type MicroService } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFleet } from './app.js';
import type { FleetReport } from './report.js';
import { serveSimNode, simContainerId, simNode } from '../test/sim-node.js';

const identityOf = (svc: ServiceContract): IdentityName =>
  (Object.keys(SERVICE_IDENTITIES) as (keyof typeof SERVICE_IDENTITIES)[]).find(
    (k) => SERVICE_IDENTITIES[k] === svc,
  )!;

let ns: NatsServer;
const conns: NatsConnection[] = [];
const services: MicroService[] = [];
const strangerDir = mkdtempSync(join(tmpdir(), 'fleet-stranger-'));

async function fleet(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runFleet(
    ['--nats-url', ns.url, ...args],
    {},
    { stdout: (t) => (out += t), stderr: (t) => (err += t) },
  );
  return { code, out, err };
}

const monitor = () => ['--nats-creds', ns.credentials('monitor')];

/** Requests the simulated services have answered on one endpoint (`list`, `summary`), all nodes. */
const requestsTo = (endpoint: string): number =>
  services
    .flatMap((s) => (s.stats() as { endpoints: { name: string; num_requests: number }[] }).endpoints)
    .filter((e) => e.name === endpoint)
    .reduce((n, e) => n + e.num_requests, 0);

beforeAll(async () => {
  ns = await startNatsServer({ jetstream: false });
  const connect = async (svc: ServiceContract) => {
    const nc = await ns.connect(identityOf(svc));
    conns.push(nc);
    return nc;
  };
  const log = silentLogger();
  // host-a: every service, 3 containers. host-b: no shiftfs-mgr, two vol-mgr replicas, 2 containers.
  services.push(...(await serveSimNode(simNode('host-a', 3), connect, { version: '1.2.3', log })));
  const b = simNode('host-b', 2);
  services.push(
    ...(await serveSimNode(b, connect, {
      version: '1.2.4',
      log,
      only: ['sysbox-subid', 'sysbox-vol', 'sysbox-rootfs'],
    })),
    ...(await serveSimNode(b, connect, { version: '1.2.5', log, only: ['sysbox-vol'] })),
  );
  await Promise.all(conns.map((c) => c.flush()));
});

afterAll(async () => {
  await Promise.all(services.map((s) => s.stop()));
  await Promise.all(conns.map((c) => c.close()));
  await ns?.stop();
  rmSync(strangerDir, { recursive: true, force: true });
});

describe('sysbox-fleet on two simulated hosts', () => {
  it("by default answers each node from its services' summaries: counts, no container (--json)", async () => {
    const [summaries, lists] = [requestsTo('summary'), requestsTo('list')];
    const r = await fleet(...monitor(), '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as FleetReport;
    expect(report.mode).toBe('summary');
    expect(report.nodes.map((n) => n.node)).toEqual(['host-a', 'host-b']);
    const [a, b] = report.nodes as [FleetReport['nodes'][0], FleetReport['nodes'][0]];
    expect(a.services.map((s) => [s.service, s.versions, s.replicas, s.health])).toEqual([
      ['sysbox-subid', ['1.2.3'], 1, 'ok'],
      ['sysbox-vol', ['1.2.3'], 1, 'ok'],
      ['sysbox-shiftfs', ['1.2.3'], 1, 'ok'],
      ['sysbox-rootfs', ['1.2.3'], 1, 'ok'],
    ]);
    expect(b.services.map((s) => [s.service, s.versions, s.replicas, s.health, s.problem])).toEqual([
      ['sysbox-subid', ['1.2.4'], 1, 'ok', undefined],
      ['sysbox-vol', ['1.2.4', '1.2.5'], 2, 'ok', undefined],
      ['sysbox-shiftfs', [], 0, 'missing', 'no instance answered its summary'],
      ['sysbox-rootfs', ['1.2.4'], 1, 'ok', undefined],
    ]);
    // No list was read: no container, and no container count.
    expect(a.containers).toBeUndefined();
    expect(a.subid).toEqual({
      mode: 'exclusive',
      pool: { uid: 165536, gid: 165536, size: 4096 * 65536 },
      idsClaimed: 3 * 65536,
    });
    expect(a.shiftfs).toEqual({ supported: true, supportedOnOverlayfs: false });
    expect(b.shiftfs).toBeUndefined();
    expect(a.volumesByKind).toEqual({ docker: 3, kubelet: 1 });
    expect(b.volumesByKind).toEqual({ docker: 2, kubelet: 1 });
    expect(a.counts).toEqual({ subidRanges: 3, volumes: 4, clones: 2, upperShifts: 1, marks: 1, preps: 1 });
    expect(b.counts).toEqual({ subidRanges: 2, volumes: 3, clones: 1, upperShifts: 1, marks: 0, preps: 1 });
    expect(report.totals).toEqual({
      nodes: 2,
      serviceInstances: 8,
      servicesNotOk: 1,
      subidRanges: 5,
      volumes: 7,
      clones: 3,
      upperShifts: 2,
      marks: 1,
      preps: 2,
    });
    // One summary request per service of each node, and no list page.
    expect(requestsTo('summary') - summaries).toBe(7);
    expect(requestsTo('list') - lists).toBe(0);
  });

  it('prints the summary as tables, without a row per container', async () => {
    const r = await fleet(...monitor());
    expect(r.code).toBe(0);
    const lines = r.out.split('\n').map((l) => l.split(/ {2,}/));
    const row = (...head: string[]) => lines.find((l) => head.every((h, i) => l[i] === h));
    expect(row('host-b', 'sysbox-shiftfs')?.at(-1)).toBe('missing: no instance answered its summary');
    expect(row('NODE', 'CONTAINER')).toBeUndefined();
    expect(row('host-a', '-')).toEqual(['host-a', '-', '3', '4', '2', '1', '1', '4/4']);
    expect(row('TOTAL')).toEqual(['TOTAL', '-', '5', '7', '3', '1', '2', '7/8']);
    expect(r.out).toContain(
      '2 node(s), 8 service instance(s), 5 subid range(s) (per container: --containers), 1 service(s) not ok',
    );
  });

  it('--containers lists every node: services, containers and what each holds, and totals', async () => {
    const r = await fleet(...monitor(), '--json', '--containers');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as FleetReport;
    expect(report.nodes.map((n) => n.node)).toEqual(['host-a', 'host-b']);
    const [a, b] = report.nodes as [FleetReport['nodes'][0], FleetReport['nodes'][0]];

    expect(a.services.map((s) => [s.service, s.versions, s.replicas, s.health])).toEqual([
      ['sysbox-subid', ['1.2.3'], 1, 'ok'],
      ['sysbox-vol', ['1.2.3'], 1, 'ok'],
      ['sysbox-shiftfs', ['1.2.3'], 1, 'ok'],
      ['sysbox-rootfs', ['1.2.3'], 1, 'ok'],
    ]);
    for (const s of a.services) expect(s.uptimeSeconds).toBeGreaterThanOrEqual(0);
    expect(b.services.map((s) => [s.service, s.versions, s.replicas, s.health])).toEqual([
      ['sysbox-subid', ['1.2.4'], 1, 'ok'],
      ['sysbox-vol', ['1.2.4', '1.2.5'], 2, 'ok'],
      ['sysbox-shiftfs', [], 0, 'missing'],
      ['sysbox-rootfs', ['1.2.4'], 1, 'ok'],
    ]);
    expect(b.services[2]!.problem).toBe('no instance answered its list');
    expect(b.services[2]!.uptimeSeconds).toBeUndefined();

    // Holdings joined by container id across the four services.
    const a0 = simContainerId('host-a', 0);
    const a1 = simContainerId('host-a', 1);
    const a2 = simContainerId('host-a', 2);
    expect(report.mode).toBe('containers');
    expect(a.containers!.map((c) => c.id)).toEqual([a0, a1, a2].sort());
    expect(a.containers!.find((c) => c.id === a0)).toEqual({
      id: a0,
      subid: { uid: 165536, gid: 165536, size: 65536 },
      volumes: ['docker', 'kubelet'],
      clone: { rootfs: `/var/lib/sysbox/rootfs/${a0}/merged`, mounted: true, chowned: true, stopped: false },
      upperShifted: true,
      marks: [`/var/lib/sysbox/shiftfs/${a0}`],
      preps: [`/srv/shared/${a0}`],
    });
    expect(a.containers!.find((c) => c.id === a1)).toEqual({
      id: a1,
      subid: { uid: 165536 + 65536, gid: 165536 + 65536, size: 65536 },
      volumes: ['docker'],
      marks: [],
      preps: [],
    });
    expect(a.subid).toEqual({ mode: 'exclusive', pool: { uid: 165536, gid: 165536, size: 4096 * 65536 } });
    expect(a.shiftfs).toEqual({ supported: true, supportedOnOverlayfs: false });
    expect(b.shiftfs).toBeUndefined();
    expect(a.counts).toEqual({
      containers: 3,
      subidRanges: 3,
      volumes: 4,
      clones: 2,
      upperShifts: 1,
      marks: 1,
      preps: 1,
    });
    expect(b.counts).toEqual({
      containers: 2,
      subidRanges: 2,
      volumes: 3,
      clones: 1,
      upperShifts: 1,
      marks: 0,
      preps: 1,
    });
    expect(report.totals).toEqual({
      nodes: 2,
      serviceInstances: 8,
      servicesNotOk: 1,
      containers: 5,
      subidRanges: 5,
      volumes: 7,
      clones: 3,
      upperShifts: 2,
      marks: 1,
      preps: 2,
    });
  });

  it('--containers prints the same as tables for people', async () => {
    const r = await fleet(...monitor(), '--containers');
    expect(r.code).toBe(0);
    const lines = r.out.split('\n').map((l) => l.split(/ {2,}/));
    const row = (...head: string[]) => lines.find((l) => head.every((h, i) => l[i] === h));
    expect(row('NODE', 'SERVICE')).toEqual([
      'NODE',
      'SERVICE',
      'VERSION',
      'REPLICAS',
      'UPTIME',
      'REQUESTS',
      'ERRORS',
      'HEALTH',
    ]);
    expect(row('host-b', 'sysbox-vol')?.slice(2, 4)).toEqual(['1.2.4,1.2.5', '2']);
    expect(row('host-b', 'sysbox-shiftfs')).toEqual([
      'host-b',
      'sysbox-shiftfs',
      '-',
      '0',
      '-',
      '0',
      '0',
      'missing: no instance answered its list',
    ]);
    const a0 = simContainerId('host-a', 0);
    expect(row('host-a', a0)).toEqual([
      'host-a',
      a0,
      '165536:165536/65536',
      'docker,kubelet',
      'mounted,chowned',
      `/var/lib/sysbox/shiftfs/${a0}`,
      `/srv/shared/${a0}`,
    ]);
    const b1 = simContainerId('host-b', 1);
    expect(row('host-b', b1)).toEqual(['host-b', b1, '231072:231072/65536', 'docker', '-', '-', '-']);
    expect(row('host-a', '3')).toEqual(['host-a', '3', '3', '4', '2', '1', '1', '4/4']);
    expect(row('host-b', '2')).toEqual(['host-b', '2', '2', '3', '1', '0', '1', '3/4']);
    expect(row('TOTAL')).toEqual(['TOTAL', '5', '5', '7', '3', '1', '2', '7/8']);
    expect(r.out).toContain('2 node(s), 8 service instance(s), 5 container(s), 1 service(s) not ok');
  });

  it('--node narrows the inventory to the nodes named', async () => {
    const r = await fleet(...monitor(), '--json', '--containers', '--node', 'host-b');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as FleetReport;
    expect(report.nodes.map((n) => n.node)).toEqual(['host-b']);
    expect(report.totals.containers).toBe(2);
    expect(report.nodes[0]!.containers!.map((c) => c.id)).toEqual(
      [simContainerId('host-b', 0), simContainerId('host-b', 1)].sort(),
    );

    // A node nobody answers for is still reported, every service missing.
    const ghost = JSON.parse((await fleet(...monitor(), '--json', '--node', 'host-c')).out) as FleetReport;
    expect(ghost.nodes.map((n) => [n.node, n.services.map((s) => s.health)])).toEqual([
      ['host-c', ['missing', 'missing', 'missing', 'missing']],
    ]);
  });

  it('fails with a clear error and exit 1 with credentials the server does not know', async () => {
    ensureCredentials(strangerDir, ['monitor']);
    const r = await fleet('--nats-creds', credentialsFile(strangerDir, 'monitor'), '--json');
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toMatch(
      new RegExp(`^sysbox-fleet: cannot read the fleet at ${ns.url}: .*authorization`, 'i'),
    );
  });

  it('fails with exit 1 when no server answers, instead of retrying as a daemon does', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    let err = '';
    const code = await runFleet(
      ['--nats-url', `nats://127.0.0.1:${port}`, ...monitor()],
      {},
      { stdout: () => undefined, stderr: (t) => (err += t) },
    );
    expect(code).toBe(1);
    expect(err).toMatch(
      /^sysbox-fleet: cannot read the fleet at nats:\/\/127\.0\.0\.1:\d+: .*connection refused/,
    );
  });

  it('refuses bad usage with exit 2', async () => {
    const r = await fleet(...monitor(), '--node', 'Not.A.Node');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--node/);
  });
});
