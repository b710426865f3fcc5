/**
 * The gateway suites' rig: a real nats-server, the gateway over its real unix socket with fakes of
 * the four services, and a gRPC client built from the .proto (gateway*.test.ts).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { NatsConnection } from '@nats-io/nats-core';
import { commonOptions, createLogger, parseConfig } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { gatewayOptions } from '../src/flags.js';
import { startGateway, type Gateway, type GatewaySettings } from '../src/gateway.js';
import type { HostFacts } from '../src/probes.js';
import { startFakeServices, type FakeOptions, type FakeServices } from './fake-services.js';
import { grpcClient, type GrpcClient } from './test-support.js';

export const log = createLogger({
  service: 'gw-test',
  node: 't',
  version: '0',
  level: process.env.GW_TEST_LOG ? 'debug' : 'silent',
  destination: process.env.GW_TEST_LOG ? process.stderr : new Writable({ write: (_c, _e, cb) => cb() }),
});

export const HEADERS = '/usr/src/linux-headers-6.1.0-test';
export const LIBMOD = '/lib/modules/6.1.0-test';
export const chownHostFacts: HostFacts = {
  kernelRelease: '6.1.0-test',
  hostDistro: 'debian',
  hostKernelHdrPath: HEADERS,
  linuxHeaderMounts: [
    { source: HEADERS, destination: HEADERS, type: 'bind', options: ['ro', 'rbind', 'rprivate'] },
  ],
  libModMounts: [{ source: LIBMOD, destination: LIBMOD, type: 'bind', options: ['ro', 'rbind', 'rprivate'] }],
  idMapMountOk: true,
  // A host where overlayfs cannot sit on ID-mapped mounts: the chown and clone path.
  overlayfsOnIDMapMountOk: false,
  binfmtMiscNamespaced: true,
};

export let ns: NatsServer;
export let nc: NatsConnection;
export let work: string;
export const cleanups: (() => Promise<unknown>)[] = [];

/** Registers the suite's hooks: one nats-server and work dir per file, cleanups after each test. */
export function useGatewayRig(): void {
  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true });
    nc = await ns.connect();
    work = await mkdtemp(join(tmpdir(), 'gw-test-'));
    // The fake allocator hands out blocks from 165536; the suite delegates them, not the host.
    await writeFile(join(work, 'subid'), `sysbox:165536:${2 ** 28}\n`);
    await writeFile(join(work, 'subid-elsewhere'), `sysbox:${2 ** 30}:65536\n`);
  });

  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });

  afterAll(async () => {
    await nc?.drain();
    await ns?.stop();
    await rm(work, { recursive: true, force: true });
  });
}

export function settings(node: string, socket: string, extra: string[] = []): GatewaySettings {
  const parsed = parseConfig(
    { ...commonOptions, ...gatewayOptions },
    [
      '--node',
      node,
      '--socket',
      socket,
      '--watch-interval-ms',
      '20',
      '--op-timeout-ms',
      '1500',
      '--subuid-file',
      join(work, 'subid'),
      '--subgid-file',
      join(work, 'subid'),
      ...extra,
    ],
    {},
  );
  if ('help' in parsed) throw new Error('help');
  return parsed.config;
}

export interface Rig {
  gw: Gateway;
  fakes: FakeServices;
  client: GrpcClient;
  socket: string;
  node: string;
}

let nodeCounter = 0;
export async function rig(
  opts: { fakes?: FakeOptions; facts?: Partial<HostFacts>; flags?: string[] } = {},
): Promise<Rig> {
  const node = `gwt${process.pid}x${++nodeCounter}`;
  const socket = join(work, `run-${node}`, 'sysmgr.sock');
  const fakes = startFakeServices(nc, node, log, opts.fakes);
  const gw = await startGateway({
    nc,
    settings: settings(node, socket, opts.flags),
    log,
    facts: { ...chownHostFacts, ...opts.facts },
  });
  const client = grpcClient(socket);
  cleanups.push(async () => {
    client.close();
    await gw.stop();
    await fakes.stopAll();
  });
  return { gw, fakes, client, socket, node };
}

export async function until<T>(fn: () => Promise<T | undefined | false>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const emptyReg = (id: string, rootfs: string) => ({
  id,
  rootfs,
  userns: '',
  netns: '',
  uidMappings: [],
  gidMappings: [],
});
