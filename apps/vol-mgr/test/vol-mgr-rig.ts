/**
 * What the vol-mgr end-to-end tests share: a real nats-server, a scratch dir with the suite's own
 * id delegation, a node and data root of its own per test, vol apps started on them (stopped, and
 * their overlay rootfses removed, after each test), a client, the apps' log lines, and the image
 * store and checks the tests use. Not part of the app's API.
 */
import { Writable } from 'node:stream';
import { chmod, chown, link, lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { needsShift, scanIds, shift } from '@sysbox-mgr-ts/id-shift';
import { createLogger, createServiceClient, type ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { useNatsServer, type NatsFixture } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import type { MetricsRegistry } from '@sysbox-mgr-ts/metrics/prometheus';
import { startVolApp, type VolApp, type VolAppConfig } from '../src/app.js';
import type { OverlayRootfs } from './tree.js';

export const OFFSET = 165536;
const idShift = { shift, scanIds, needsShift };

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({
    service: 'vol-test',
    node: 't',
    version: '0',
    level: 'info',
    destination: new Writable({
      write: (chunk, _e, cb) => {
        for (const l of String(chunk).split('\n'))
          if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    }),
  });
  return { log, lines };
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(SysboxError);
  expect((err as SysboxError).code).toBe(code);
}

/** /var/lib/docker as an image would ship it: root-owned, plus a few other owners, links and modes. */
export async function fillDockerStore(lower: string): Promise<void> {
  const d = join(lower, 'var/lib/docker');
  await mkdir(join(d, 'image/overlay2'), { recursive: true });
  await mkdir(join(d, 'volumes'), { recursive: true });
  await chmod(join(lower, 'var'), 0o755);
  await chmod(join(lower, 'var/lib'), 0o755);
  await chmod(d, 0o710);
  await writeFile(join(d, 'image/overlay2/repositories.json'), '{"Repositories":{}}');
  await writeFile(join(d, 'engine-id'), 'abc123');
  await chmod(join(d, 'engine-id'), 0o600);
  await link(join(d, 'engine-id'), join(d, 'engine-id.hard'));
  await symlink('image/overlay2/repositories.json', join(d, 'repos-link'));
  await writeFile(join(d, 'volumes/owned-by-user'), 'user data');
  await chown(join(d, 'volumes/owned-by-user'), 1000, 1001);
  await chown(join(d, 'volumes'), 1000, 1001);
  await writeFile(join(d, 'setgid-tool'), '#!/bin/sh\n');
  await chmod(join(d, 'setgid-tool'), 0o2755);
}

/** Every path under `dir`, itself included, sorted. */
export async function listAll(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string): Promise<void> => {
    out.push(p);
    const st = await lstat(p);
    if (st.isDirectory()) for (const n of await readdir(p)) await walk(join(p, n));
  };
  await walk(dir);
  return out.sort();
}

export interface VolMgrRig {
  readonly nats: NatsFixture;
  /** The suite's scratch dir, its only rootfs root. */
  readonly base: string;
  /** A client of this test's node. */
  readonly client: ServiceClient;
  /** This test's number: its node is `t<testNo>`. */
  readonly testNo: number;
  /** This test's data root. */
  readonly data: string;
  /** Every line the apps logged, parsed. */
  readonly capture: { lines: Record<string, unknown>[] };
  /** Overlay rootfses a test pushes here are removed after it. */
  readonly rootfses: OverlayRootfs[];
  /** Starts a vol app on this test's node and data root (stopped after the test). */
  start(over?: Partial<VolAppConfig>, rsyncExtraArgs?: string[], metrics?: MetricsRegistry): Promise<VolApp>;
  stopApp(app: VolApp): Promise<void>;
}

/** Registers the rig's hooks in the calling `describe`. */
export function useVolMgrRig(): VolMgrRig {
  const nats = useNatsServer();
  let base: string;
  let client: ServiceClient;
  // Each test has its own node (so its own KV keys and subjects) and data root.
  let testNo = 0;
  let data = '';
  const apps: VolApp[] = [];
  const rootfses: OverlayRootfs[] = [];
  const capture = capturingLogger();

  const config = (over: Partial<VolAppConfig> = {}): VolAppConfig => ({
    node: `t${testNo}`,
    dataRoot: data,
    kvReplicas: 1,
    sync: true,
    syncTimeoutMs: 60_000,
    removeOrphans: false,
    cleanupOnStop: false,
    stopGraceMs: 1000,
    // The suite's own delegation and rootfs root, never the host's /etc/subuid.
    allowedRootfsRoots: [base],
    subuidFile: join(base, 'subid'),
    subgidFile: join(base, 'subid'),
    ...over,
  });
  const start = async (
    over: Partial<VolAppConfig> = {},
    rsyncExtraArgs?: string[],
    metrics?: MetricsRegistry,
  ): Promise<VolApp> => {
    const app = await startVolApp(config(over), {
      nc: nats.nc,
      log: capture.log,
      version: '0.0.0',
      idShift,
      rsyncExtraArgs,
      metrics: metrics?.forApp('vol-mgr'),
    });
    apps.push(app);
    return app;
  };
  const stopApp = async (app: VolApp): Promise<void> => {
    apps.splice(apps.indexOf(app), 1);
    await app.stop();
  };

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'volmgr-it-'));
    await writeFile(join(base, 'subid'), `sysbox:${OFFSET}:${16 * 65536}\n`);
  });
  beforeEach(async () => {
    testNo++;
    data = join(base, `data${testNo}`);
    client = createServiceClient(nats.nc, { node: `t${testNo}`, timeoutMs: 30_000 });
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.stop();
    for (const r of rootfses.splice(0)) await r.cleanup();
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  return {
    nats,
    get base() {
      return base;
    },
    get client() {
      return client;
    },
    get testNo() {
      return testNo;
    },
    get data() {
      return data;
    },
    capture,
    rootfses,
    start,
    stopApp,
  };
}
