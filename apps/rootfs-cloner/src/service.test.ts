/**
 * The service over a real nats-server: handlers through serve(), and the daemon itself as a child
 * process that is killed with SIGKILL between create-clone and chown-clone.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  rootfsChownClone,
  rootfsCreateClone,
  rootfsList,
  rootfsSummary,
  rootfsRemoveClone,
  rootfsRevertChown,
  rootfsService,
} from '@sysbox-mgr-ts/contracts';
import { startProcess } from '@sysbox-mgr-ts/exec';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { mountsAt, mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import {
  silentLogger,
  createServiceClient,
  decodeJson,
  encodeJson,
  serve,
  ERROR_CODE_HEADER,
} from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterEach, describe, expect, it } from 'vitest';
import { CloneRecord, UpperRecord, createCloner } from './cloner.js';
import { createMounter } from './mounter.js';
import { shift } from '@sysbox-mgr-ts/id-shift';
import { buildRuntimeRootfs, testGuard, unmountAllUnder } from '../test/rootfs.js';
import { createBindings } from './service.js';

const OFFSET = 165536;
const silent = silentLogger();

describe('rootfs service over NATS', () => {
  const nats = useNatsServer();
  let base = '';
  let daemon: ReturnType<typeof startProcess> | undefined;

  afterEach(async () => {
    daemon?.kill('SIGKILL');
    await daemon?.catch(() => undefined);
    daemon = undefined;
    if (base) {
      await unmountAllUnder(base);
      expect(mountsUnder(await readMountInfo(), base)).toEqual([]);
      await rm(base, { recursive: true, force: true });
    }
  });

  it('serves every subject; errors come back typed with NATS status headers', async () => {
    base = await mkdtemp(join(tmpdir(), 'rfc-svc-'));
    const fx = await buildRuntimeRootfs(join(base, 'runtime'));
    const kv = await openBucket(nats.nc, rootfsService.bucket);
    const cloner = createCloner({
      dataRoot: join(base, 'data'),
      clones: createStateStore(kv, { node: 'svc', namespace: 'clone', schema: CloneRecord }),
      uppers: createStateStore(kv, { node: 'svc', namespace: 'upper', schema: UpperRecord }),
      mounter: createMounter({ timeoutMs: 10_000 }),
      shiftIds: shift,
      log: silent,
      pageSize: 4096,
      shiftTimeoutMs: 20_000,
      readMounts: () => readMountInfo(),
      guard: await testGuard(base, join(base, 'data')),
    });
    const svc = serve({
      nc: nats.nc,
      service: rootfsService,
      node: 'svc',
      version: '0',
      log: silent,
      bindings: createBindings(cloner),
    });
    try {
      const client = createServiceClient(nats.nc, { node: 'svc', timeoutMs: 20_000 });
      const { rootfs } = await client.call(rootfsCreateClone, { id: 'web', origRootfs: fx.rootfs });
      await client.call(rootfsChownClone, { id: 'web', uidOffset: OFFSET, gidOffset: OFFSET });
      expect((await stat(join(rootfs, 'opt/app/file3'))).uid).toBe(OFFSET);
      expect((await client.call(rootfsList, {})).clones).toMatchObject([{ id: 'web', chowned: true }]);
      expect(await client.call(rootfsSummary, {})).toEqual({ clones: 1, uppers: 0 });

      // What `nats req sysbox.svc.rootfs.create-clone '{...}'` shows for a plain directory.
      const raw = await nats.nc.request(
        'sysbox.svc.rootfs.create-clone',
        encodeJson({ id: 'x', origRootfs: base }),
        { timeout: 5000 },
      );
      expect(raw.headers?.get(ERROR_CODE_HEADER)).toBe('501');
      expect((decodeJson(raw.data) as { error: { code: string } }).error.code).toBe('unsupported');
      await expect(client.call(rootfsRevertChown, { id: 'nope' })).rejects.toMatchObject({
        code: 'not-found',
      });
      await expect(
        client.call(rootfsCreateClone, { id: '../x', origRootfs: fx.rootfs }),
      ).rejects.toMatchObject({ code: 'invalid-request' });

      await client.call(rootfsRemoveClone, { id: 'web' });
      expect(await client.call(rootfsSummary, {})).toEqual({ clones: 0, uppers: 0 });
      expect(mountsUnder(await readMountInfo(), join(base, 'data'))).toEqual([]);
    } finally {
      await svc.stop();
    }
  });

  it('a daemon killed with SIGKILL between create-clone and chown-clone loses nothing', async () => {
    base = await mkdtemp(join(tmpdir(), 'rfc-kill-'));
    const fx = await buildRuntimeRootfs(join(base, 'runtime'));
    await testGuard(base, join(base, 'data'));
    const appDir = resolve(import.meta.dirname, '..');
    const start = () =>
      // node with tsx's loader, not the tsx CLI: SIGKILL must hit the daemon itself, not a wrapper.
      startProcess(
        process.execPath,
        ['--conditions=@sysbox-mgr-ts/source', '--import', 'tsx', 'src/main.ts'],
        {
          cwd: appDir,
          env: {
            NATS_URL: nats.ns.url,
            NATS_CREDS: nats.ns.credentials('rootfs-cloner'),
            SYSBOX_NODE: 'kill',
            SYSBOX_DATA_ROOT: join(base, 'data'),
            LOG_LEVEL: 'warn',
            // The test's own rootfs root and delegation (testGuard wrote the file), not the host's.
            SYSBOX_ALLOWED_ROOTFS_ROOTS: base,
            SYSBOX_SUBUID_FILE: join(base, 'subid'),
            SYSBOX_SUBGID_FILE: join(base, 'subid'),
          },
          output: { file: join(base, 'daemon.log') },
        },
      );
    const client = createServiceClient(nats.nc, { node: 'kill', timeoutMs: 20_000 });
    const ready = async () => {
      for (let i = 0; i < 40; i++) {
        if (
          await client.call(rootfsList, {}, { timeoutMs: 500 }).then(
            () => true,
            () => false,
          )
        )
          return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('daemon did not answer');
    };

    daemon = start();
    await ready();
    const { rootfs } = await client.call(rootfsCreateClone, { id: 'k', origRootfs: fx.rootfs });
    daemon.kill('SIGKILL');
    await daemon.catch(() => undefined);
    // Killed, not stopped: the clone is still mounted.
    expect(mountsAt(await readMountInfo(), fx.rootfs).length).toBe(3);

    daemon = start();
    await ready();
    await client.call(rootfsChownClone, { id: 'k', uidOffset: OFFSET, gidOffset: OFFSET });
    expect((await stat(join(fx.rootfs, 'etc/passwd'))).uid).toBe(OFFSET);
    expect((await stat(join(rootfs, 'usr/lib/lib2.so'))).uid).toBe(OFFSET);
    expect((await client.call(rootfsList, {})).clones).toMatchObject([
      { id: 'k', chowned: true, mounted: true },
    ]);
    await client.call(rootfsRemoveClone, { id: 'k' });
  });
});
