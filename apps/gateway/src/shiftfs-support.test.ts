/**
 * How the gateway learns shiftfs support from shiftfs-mgr: both of its answers used apart, the
 * precheck and disable flags, and a shiftfs-mgr that comes up after the gateway (real nats-server,
 * services served through service-kit, the gateway over its gRPC socket).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  shiftfsList,
  shiftfsMark,
  shiftfsService,
  shiftfsUnmark,
  shiftfsSummary,
  shiftfsUnmarkAll,
} from '@sysbox-mgr-ts/contracts';
import { commonOptions, createLogger, handle, parseConfig, serve } from '@sysbox-mgr-ts/service-kit';
import { startNatsServer, type NatsServer } from '@sysbox-mgr-ts/test-nats';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeServices } from '../test/fake-services.js';
import { gatewayOptions } from './flags.js';
import { shiftfsConfig, startGateway, type GatewaySettings } from './gateway.js';
import type { HostFacts } from './probes.js';
import type { ShiftfsSupport } from './shiftfs-support.js';
import { grpcClient, rpc } from '../test/test-support.js';

const log = createLogger({
  service: 'gw-shiftfs-test',
  node: 't',
  version: '0',
  level: 'silent',
  destination: new Writable({ write: (_c, _e, cb) => cb() }),
});

const facts: HostFacts = {
  kernelRelease: '6.1.0-test',
  hostDistro: 'debian',
  hostKernelHdrPath: '/usr/src/linux-headers-6.1.0-test',
  linuxHeaderMounts: [],
  libModMounts: [],
  idMapMountOk: false,
  overlayfsOnIDMapMountOk: false,
  binfmtMiscNamespaced: false,
};

function flags(extra: string[] = [], node = 'n', socket = '/run/x.sock'): GatewaySettings {
  const parsed = parseConfig(
    { ...commonOptions, ...gatewayOptions },
    ['--node', node, '--socket', socket, '--op-timeout-ms', '1000', '--service-wait-ms', '0', ...extra],
    {},
  );
  if ('help' in parsed) throw new Error('help');
  return parsed.config;
}

describe('ShiftfsOk and ShiftfsOnOverlayfsOk from shiftfs-mgr', () => {
  const answer = (a: Partial<ShiftfsSupport>): ShiftfsSupport => ({
    inKernel: true,
    supported: true,
    supportedOnOverlayfs: true,
    ...a,
  });

  it('each from its own functional check', () => {
    expect(shiftfsConfig(flags(), answer({ supportedOnOverlayfs: false }))).toEqual({
      shiftfsOk: true,
      shiftfsOnOverlayfsOk: false,
    });
    expect(shiftfsConfig(flags(), answer({ supported: false }))).toEqual({
      shiftfsOk: false,
      shiftfsOnOverlayfsOk: true,
    });
  });

  it('with --disable-shiftfs-precheck, both from whether the kernel has shiftfs, as upstream', () => {
    const failedChecks = answer({ supported: false, supportedOnOverlayfs: false });
    expect(shiftfsConfig(flags(['--disable-shiftfs-precheck']), failedChecks)).toEqual({
      shiftfsOk: true,
      shiftfsOnOverlayfsOk: true,
    });
    expect(
      shiftfsConfig(
        flags(['--disable-shiftfs-precheck']),
        answer({ inKernel: false, supported: false, supportedOnOverlayfs: false }),
      ),
    ).toEqual({
      shiftfsOk: false,
      shiftfsOnOverlayfsOk: false,
    });
  });

  it('never with --disable-shiftfs, nor without an answer', () => {
    expect(shiftfsConfig(flags(['--disable-shiftfs']), answer({}))).toEqual({
      shiftfsOk: false,
      shiftfsOnOverlayfsOk: false,
    });
    expect(shiftfsConfig(flags(['--disable-shiftfs', '--disable-shiftfs-precheck']), answer({}))).toEqual({
      shiftfsOk: false,
      shiftfsOnOverlayfsOk: false,
    });
    expect(shiftfsConfig(flags(), undefined)).toEqual({ shiftfsOk: false, shiftfsOnOverlayfsOk: false });
  });
});

describe('a gateway and a shiftfs-mgr that comes up later', () => {
  let ns: NatsServer;
  let nc: NatsConnection;
  let work: string;
  let nodeCounter = 0;
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    ns = await startNatsServer({ jetstream: true });
    nc = await ns.connect();
    work = await mkdtemp(join(tmpdir(), 'gw-shiftfs-'));
    await writeFile(join(work, 'subid'), `sysbox:165536:${2 ** 28}\n`);
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });
  afterAll(async () => {
    await nc?.drain();
    await ns?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** A shiftfs-mgr whose list answers as given (the real one's reply shape, or 0.1's); counts the asks. */
  function serveShiftfsMgr(node: string, reply: Record<string, unknown>): { asks: number } {
    const counter = { asks: 0 };
    const svc = serve({
      nc,
      service: shiftfsService,
      node,
      version: '0.0.0-test',
      log,
      bindings: [
        handle(shiftfsList, async () => {
          counter.asks++;
          return { ...reply, marks: [] } as never;
        }),
        handle(shiftfsMark, async (req) => ({ mounts: req.mounts })),
        handle(shiftfsUnmark, async () => ({})),
        handle(shiftfsUnmarkAll, async () => ({ unmarked: [], failures: [] })),
        handle(shiftfsSummary, async () => ({ supported: false, supportedOnOverlayfs: false, marks: 0 })),
      ],
    });
    cleanups.push(() => svc.stop());
    return counter;
  }

  /** A gateway with every service but shiftfs-mgr, asking it again every 50 ms. */
  async function gatewayWithoutShiftfsMgr(extra: string[] = []) {
    const node = `gws${process.pid}x${++nodeCounter}`;
    const socket = join(work, node, 'sysmgr.sock');
    const fakes = startFakeServices(nc, node, log, { only: ['subid', 'vol', 'rootfs'] });
    const settings = flags(
      ['--subuid-file', join(work, 'subid'), '--subgid-file', join(work, 'subid'), ...extra],
      node,
      socket,
    );
    const started = performance.now();
    const gw = await startGateway({ nc, settings, log, facts, shiftfsRetry: { firstMs: 50, maxMs: 200 } });
    const startMs = performance.now() - started;
    const client = grpcClient(socket);
    cleanups.push(async () => {
      client.close();
      await gw.stop();
      await fakes.stopAll();
    });
    let n = 0;
    /** Registers a new container and answers its ContainerConfig, timed. */
    const register = async () => {
      const id = `c${++n}`;
      const rootfs = join(work, node, id, 'rootfs');
      await mkdir(rootfs, { recursive: true });
      const t = performance.now();
      const reply = await rpc(client, 'Register', {
        id,
        rootfs,
        userns: '',
        netns: '',
        uidMappings: [],
        gidMappings: [],
      });
      return { config: reply.containerConfig as Record<string, unknown>, ms: performance.now() - t };
    };
    return { node, gw, register, startMs };
  }

  async function until(fn: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!fn()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('says no without waiting while shiftfs-mgr is absent, and yes for the next container once it answers', async () => {
    const { node, gw, register, startMs } = await gatewayWithoutShiftfsMgr([
      '--service-wait-ms',
      '60000',
      '--op-timeout-ms',
      '60000',
    ]);
    const before = await register();
    expect(before.config).toMatchObject({ ShiftfsOk: false, ShiftfsOnOverlayfsOk: false });
    // The ask happens in the background: Register does not wait for the absent shiftfs-mgr (waiting
    // would take the 60 s service wait, past this test's own time-out).
    console.log(
      `gateway start with shiftfs-mgr absent: ${startMs.toFixed(0)} ms; Register meanwhile: ${before.ms.toFixed(1)} ms`,
    );

    serveShiftfsMgr(node, {
      supported: true,
      supportedOnOverlayfs: false,
      inKernel: true,
      reason: 'shiftfs works',
      reasonOnOverlayfs:
        'shiftfs is listed but does not work on overlayfs: file rename on shiftfs: EOVERFLOW',
    });
    await until(() => gw.config.shiftfsOk);
    const after = await register();
    expect(after.config).toMatchObject({ ShiftfsOk: true, ShiftfsOnOverlayfsOk: false });
  });

  it('takes a shiftfs-mgr 0.1 reply (supported only): shiftfs yes, on overlayfs not known, so no', async () => {
    const { node, gw, register } = await gatewayWithoutShiftfsMgr();
    const fake = startFakeServices(nc, node, log, { only: ['shiftfs'], shiftfsSupported: true });
    cleanups.push(() => fake.stopAll());
    await until(() => gw.config.shiftfsOk);
    expect((await register()).config).toMatchObject({ ShiftfsOk: true, ShiftfsOnOverlayfsOk: false });
  });

  it('stops asking once answered, and with --disable-shiftfs never asks', async () => {
    const answered = await gatewayWithoutShiftfsMgr();
    const answeredMgr = serveShiftfsMgr(answered.node, {
      supported: false,
      supportedOnOverlayfs: false,
      inKernel: false,
    });
    await until(() => answeredMgr.asks > 0);
    await new Promise((r) => setTimeout(r, 500));
    expect(answeredMgr.asks).toBe(1);
    expect(answered.gw.config).toMatchObject({ shiftfsOk: false, shiftfsOnOverlayfsOk: false });

    const disabled = await gatewayWithoutShiftfsMgr(['--disable-shiftfs']);
    const ignoredMgr = serveShiftfsMgr(disabled.node, {
      supported: true,
      supportedOnOverlayfs: true,
      inKernel: true,
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(ignoredMgr.asks).toBe(0);
    expect((await disabled.register()).config).toMatchObject({
      ShiftfsOk: false,
      ShiftfsOnOverlayfsOk: false,
    });
  });
});
