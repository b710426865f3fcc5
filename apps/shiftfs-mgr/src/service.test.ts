import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  shiftfsList,
  shiftfsMark,
  shiftfsService,
  shiftfsSummary,
  shiftfsUnmark,
  shiftfsUnmarkAll,
} from '@sysbox-mgr-ts/contracts';
import {
  createServiceClient,
  decodeJson,
  encodeJson,
  serve,
  ERROR_CODE_HEADER,
} from '@sysbox-mgr-ts/service-kit';
import type { MicroService } from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openMarkStore } from './mark-store.js';
import { createShiftfsMarks } from './marks.js';
import { probeShiftfs, type ShiftfsProbe } from './probe.js';
import { createShiftfsBindings, shiftfsMetadata } from './service.js';
import { FakeKernel, WORKING_SHIFTFS, captureLogger } from '../test/fake-kernel.js';

describe('sysbox-shiftfs over a real nats-server', () => {
  const nats = useNatsServer();
  let dir: string;
  let hostProbe: ShiftfsProbe;
  const kernel = new FakeKernel();
  const services: MicroService[] = [];

  /** Wires a replica as main.ts does, with the mount side injected. */
  async function startReplica(node: string, probe: ShiftfsProbe): Promise<void> {
    const { log } = captureLogger();
    const marks = await createShiftfsMarks({
      store: await openMarkStore(nats.nc, { node }),
      mounter: kernel.mounter,
      readMounts: kernel.readMounts,
      workDir: join(dir, node, 'shiftfs'),
      dataRoot: join(dir, node),
      probe,
      log,
    });
    await marks.reconcile();
    services.push(
      serve({
        nc: nats.nc,
        service: shiftfsService,
        node,
        version: '0.1.0',
        log,
        bindings: createShiftfsBindings(marks, probe),
        metadata: shiftfsMetadata(probe),
      }),
    );
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shiftfsmgr-svc-'));
    await mkdir(join(dir, 'src'));
    hostProbe = await probeShiftfs({
      modprobe: true,
      precheck: true,
      checkDir: dir,
      log: captureLogger().log,
    });
    await startReplica('host', hostProbe);
    await startReplica('fake', WORKING_SHIFTFS);
    await startReplica('fake', WORKING_SHIFTFS);
  });
  afterAll(async () => {
    for (const s of services) await s.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('publishes the probe result in $SRV.INFO metadata', async () => {
    const infos: { metadata: Record<string, string> }[] = [];
    for await (const m of await nats.nc.requestMany('$SRV.INFO.sysbox-shiftfs', undefined, {
      maxWait: 500,
    })) {
      infos.push(decodeJson(m.data) as { metadata: Record<string, string> });
    }
    const byNode = infos
      .map((i) => [i.metadata.node, i.metadata.shiftfs, i.metadata.shiftfsOnOverlayfs])
      .sort();
    expect(byNode).toEqual([
      ['fake', 'true', 'true'],
      ['fake', 'true', 'true'],
      ['host', String(hostProbe.supported), String(hostProbe.onOverlayfs.supported)],
    ]);
  });

  it('without shiftfs, a raw request to mark gets a 501 unsupported reply that says why', async (ctx) => {
    if (hostProbe.supported) ctx.skip(); // this host has shiftfs
    const msg = await nats.nc.request(
      shiftfsMark.subject('host'),
      encodeJson({
        id: 'c1',
        mounts: [{ source: join(dir, 'src'), readonly: false }],
        createMarkpoint: true,
      }),
      { timeout: 5000 },
    );
    expect(msg.headers?.get(ERROR_CODE_HEADER)).toBe('501');
    const body = decodeJson(msg.data) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('unsupported');
    expect(body.error.message).toMatch(/no shiftfs/);
    const client = createServiceClient(nats.nc, { node: 'host' });
    expect(await client.call(shiftfsList, {})).toEqual({
      supported: false,
      supportedOnOverlayfs: false,
      inKernel: false,
      reason: hostProbe.reason,
      reasonOnOverlayfs: hostProbe.reason,
      marks: [],
    });
    expect(
      await client.call(shiftfsUnmark, {
        id: 'c1',
        mounts: [{ source: '/var/lib/sysbox/shiftfs/x', readonly: false }],
      }),
    ).toEqual({});
  });

  it('marks, lists, unmarks and unmarks all through two replicas', async () => {
    const client = createServiceClient(nats.nc, { node: 'fake' });
    const source = join(dir, 'src');
    const first = await client.call(shiftfsMark, {
      id: 'c1',
      mounts: [{ source, readonly: true }],
      createMarkpoint: true,
    });
    const second = await client.call(shiftfsMark, {
      id: 'c2',
      mounts: [{ source, readonly: false }],
      createMarkpoint: true,
    });
    expect(second.mounts[0]!.source).toBe(first.mounts[0]!.source);
    expect(first.mounts[0]!.readonly).toBe(true);
    expect(kernel.markCalls).toHaveLength(1);

    const listed = await client.call(shiftfsList, {});
    expect(listed.supported).toBe(true);
    expect(listed.marks).toEqual([
      expect.objectContaining({
        source,
        markpoint: first.mounts[0]!.source,
        holders: ['c1', 'c2'],
        state: 'mounted',
        createdMarkpoint: true,
      }),
    ]);
    // Two holders, one mark.
    expect(await client.call(shiftfsSummary, {})).toEqual({
      supported: true,
      supportedOnOverlayfs: true,
      marks: 1,
    });

    await client.call(shiftfsUnmark, { id: 'c1', mounts: first.mounts });
    expect(kernel.unmountCalls).toEqual([]);
    const other = join(dir, 'src2');
    await mkdir(other);
    await client.call(shiftfsMark, {
      id: 'c3',
      mounts: [{ source: other, readonly: false }],
      createMarkpoint: false,
    });

    const all = await client.call(shiftfsUnmarkAll, {});
    expect(all.unmarked.sort()).toEqual([first.mounts[0]!.source, other].sort());
    expect(all.failures).toEqual([]);
    await expect(stat(first.mounts[0]!.source)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await client.call(shiftfsList, {})).marks).toEqual([]);
    expect((await client.call(shiftfsSummary, {})).marks).toBe(0);
  });

  it('rejects a relative source before touching anything', async () => {
    const client = createServiceClient(nats.nc, { node: 'fake' });
    await expect(
      client.call(shiftfsMark, {
        id: 'c1',
        mounts: [{ source: 'relative/path', readonly: false }],
        createMarkpoint: true,
      }),
    ).rejects.toMatchObject({ code: 'invalid-request' });
  });
});
