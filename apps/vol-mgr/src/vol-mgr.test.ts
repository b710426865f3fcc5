/**
 * The vol service end to end as root: real overlay rootfs, real rsync, a real nats-server with
 * JetStream for state, requests through the NATS client.
 */
import { Writable } from 'node:stream';
import {
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
  chown,
  chmod,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  VOLUME_KINDS,
  VOLUME_LAYOUT,
  SysboxError,
  volByKind,
  volList,
  volPrep,
  volRevertPrep,
  volService,
  volSummary,
} from '@sysbox-mgr-ts/contracts';
import { needsShift, scanIds, shift } from '@sysbox-mgr-ts/id-shift';
import { createStateStore, openBucket } from '@sysbox-mgr-ts/kv-state';
import { createLogger, createServiceClient, type ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createMetricsRegistry, type MetricsRegistry } from '@sysbox-mgr-ts/metrics/prometheus';
import { parseExposition } from '@sysbox-mgr-ts/metrics/testing';
import { startVolApp, type VolApp, type VolAppConfig } from './app.js';
import { VolumeRecord } from './volumes.js';
import { makeOverlayRootfs, snapshotTree, type OverlayRootfs } from '../test/tree.js';

const OFFSET = 165536;
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

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(SysboxError);
  expect((err as SysboxError).code).toBe(code);
}

/** /var/lib/docker as an image would ship it: root-owned, plus a few other owners, links and modes. */
async function fillDockerStore(lower: string): Promise<void> {
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

async function listAll(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string): Promise<void> => {
    out.push(p);
    const st = await lstat(p);
    if (st.isDirectory()) for (const n of await readdir(p)) await walk(join(p, n));
  };
  await walk(dir);
  return out.sort();
}

describe('vol-mgr on a real nats-server with real mounts (root)', () => {
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

  it('creates with chownOnSync, survives a restart, syncs out into the overlay upper dir shifted back, destroys', async () => {
    const rootfs = await makeOverlayRootfs('volmgr-ovl-', fillDockerStore, base);
    rootfses.push(rootfs);
    const firstMetrics = createMetricsRegistry();
    const first = await start({}, undefined, firstMetrics);
    const docker = volByKind.docker;

    const created = await client.call(docker.create, {
      id: 'c1',
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: true,
    });
    const volPath = join(data, 'docker/c1');
    expect(created.mounts).toEqual([
      { source: volPath, destination: '/var/lib/docker', type: 'bind', options: ['rbind', 'rprivate'] },
    ]);
    const imageTree = await snapshotTree(join(rootfs.lower, 'var/lib/docker'));
    // The copy holds exactly the image's tree, every owner shifted up by the offset.
    expect(await snapshotTree(volPath, OFFSET)).toEqual(imageTree);
    expect((await stat(join(volPath, 'engine-id'))).uid).toBe(OFFSET);
    expect((await stat(join(volPath, 'volumes/owned-by-user'))).gid).toBe(OFFSET + 1001);
    // Issue #28: the sync-in is timed with the entries its id scan saw, the volume counted by kind.
    const afterCreate = parseExposition(await firstMetrics.text());
    expect(afterCreate.sum('sysbox_rsync_duration_seconds_count', { op: 'sync-in' })).toBe(1);
    expect(afterCreate.sum('sysbox_rsync_entries_total', { op: 'sync-in' })).toBeGreaterThan(0);
    expect(afterCreate.sum('sysbox_volumes', { app: 'vol-mgr', kind: 'docker' })).toBe(1);
    expect(afterCreate.sum('sysbox_volumes', { kind: 'kubelet' })).toBe(0);
    // The same create again (an answer lost in a reconnect) gets the same answer; another one is refused.
    expect(
      (
        await client.call(docker.create, {
          id: 'c1',
          rootfs: rootfs.merged,
          mountpoint: '/var/lib/docker',
          uid: OFFSET,
          gid: OFFSET,
          chownOnSync: true,
        })
      ).mounts,
    ).toEqual(created.mounts);
    await expectCode(
      client.call(docker.create, {
        id: 'c1',
        rootfs: rootfs.merged,
        mountpoint: '/var/lib/docker2',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: true,
      }),
      'already-exists',
    );

    // The container writes more, as its own users.
    await mkdir(join(volPath, 'containers/abc'), { recursive: true });
    await writeFile(join(volPath, 'containers/abc/config.json'), '{"x":1}');
    await chown(join(volPath, 'containers/abc/config.json'), OFFSET + 33, OFFSET + 44);
    await chown(join(volPath, 'containers/abc'), OFFSET, OFFSET);
    await chown(join(volPath, 'containers'), OFFSET, OFFSET);
    await link(join(volPath, 'containers/abc/config.json'), join(volPath, 'containers/abc/config.hard'));
    await symlink('../../engine-id', join(volPath, 'containers/abc/engine'));
    await rm(join(volPath, 'repos-link'));
    const volTree = await snapshotTree(volPath, OFFSET);

    // A restart of the daemon between create and sync-out forgets nothing.
    await stopApp(first);
    const secondMetrics = createMetricsRegistry();
    const second = await start({}, undefined, secondMetrics);
    expect(second.reconciled.find((r) => r.kind === 'docker')?.kept).toEqual(['c1']);
    const listed = await client.call(volList, { kind: 'docker' });
    expect(listed.volumes).toHaveLength(1);
    expect(listed.volumes[0]).toMatchObject({
      id: 'c1',
      path: volPath,
      syncOutTarget: join(rootfs.upper, 'var/lib/docker'),
      uid: OFFSET,
    });
    expect(listed.volumes[0]!.sizeBytes).toBeGreaterThan(0);
    // The counts a fleet inventory reads: every kind, from the stores' keys.
    expect(await client.call(volSummary, {})).toEqual({
      volumes: { ...Object.fromEntries(VOLUME_KINDS.map((k) => [k, 0])), docker: 1 },
      preps: 0,
    });

    await client.call(docker.syncOut, { id: 'c1' });
    expect(
      parseExposition(await secondMetrics.text()).sum('sysbox_rsync_duration_seconds_count', {
        op: 'sync-out',
      }),
    ).toBe(1);
    const target = join(rootfs.upper, 'var/lib/docker');
    // Content, modes, owners (back to root and 1000:1001), symlinks and hard links match exactly.
    expect(await snapshotTree(target)).toEqual(volTree);
    expect((await stat(join(target, 'containers/abc/config.json'))).uid).toBe(33);
    expect((await stat(join(target, 'engine-id'))).uid).toBe(0);
    // Parents made in the upper layer keep the lower layer's modes, so they mask nothing.
    expect((await stat(join(rootfs.upper, 'var'))).mode & 0o7777).toBe(0o755);

    await client.call(docker.destroy, { id: 'c1' });
    await expect(stat(volPath)).rejects.toThrow(/ENOENT/);
    expect((await client.call(volList, {})).volumes).toEqual([]);
    expect((await client.call(volSummary, {})).volumes.docker).toBe(0);
    await expectCode(client.call(docker.destroy, { id: 'c1' }), 'not-found');
    await expectCode(client.call(docker.syncOut, { id: 'c1' }), 'not-found');
  });

  it('--no-sync (upstream disable-inner-image-preload) still syncs the image in, and never back out', async () => {
    const rootfs = await makeOverlayRootfs('volmgr-nosync-', fillDockerStore, base);
    rootfses.push(rootfs);
    await start({ sync: false });
    const docker = volByKind.docker;
    await client.call(docker.create, {
      id: 'n1',
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: true,
    });
    const volPath = join(data, 'docker/n1');
    expect(await snapshotTree(volPath, OFFSET)).toEqual(
      await snapshotTree(join(rootfs.lower, 'var/lib/docker')),
    );
    await writeFile(join(volPath, 'pulled'), 'an image the inner docker pulled');
    await client.call(docker.syncOut, { id: 'n1' });
    await expect(stat(join(rootfs.upper, 'var/lib/docker', 'pulled'))).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('lays out every kind with its host dir (0700, as upstream) and each volume with its perm; sync-out-and-destroy-all empties it', async () => {
    await start();
    const plainRootfs = await mkdtemp(join(base, 'plain-'));
    for (const kind of VOLUME_KINDS) {
      const { hostDir, perm, mountpoint } = VOLUME_LAYOUT[kind];
      expect((await stat(join(data, hostDir))).mode & 0o7777, kind).toBe(0o700);
      const [uid, gid] = [OFFSET + 65536, OFFSET + 2 * 65536];
      const r = await client.call(volByKind[kind].create, {
        id: `k-${kind}`,
        rootfs: plainRootfs,
        mountpoint,
        uid,
        gid,
        chownOnSync: false,
      });
      const st = await stat(r.mounts[0]!.source);
      expect([r.mounts[0]!.source, st.mode & 0o7777, st.uid, st.gid]).toEqual([
        join(data, hostDir, `k-${kind}`),
        perm,
        uid,
        gid,
      ]);
    }
    for (const kind of VOLUME_KINDS) {
      const r = await client.call(volByKind[kind].syncOutAndDestroyAll, {});
      expect(r).toEqual({ destroyed: [`k-${kind}`], failures: [] });
      expect(await readdir(join(data, VOLUME_LAYOUT[kind].hostDir))).toEqual([]);
    }
  });

  it('on start drops volumes whose dir vanished and reports orphan dirs, removing them only when asked', async () => {
    const app = await start();
    const plainRootfs = await mkdtemp(join(base, 'plain-'));
    const mk = (id: string) =>
      client.call(volByKind.kubelet.create, {
        id,
        rootfs: plainRootfs,
        mountpoint: '/var/lib/kubelet',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: false,
      });
    await mk('keep');
    await mk('gone');
    await rm(join(data, 'kubelet/gone'), { recursive: true });
    await mkdir(join(data, 'kubelet/stray'));
    await stopApp(app);

    const again = await start();
    expect(again.reconciled.find((r) => r.kind === 'kubelet')).toMatchObject({
      kept: ['keep'],
      vanished: ['gone'],
      orphans: ['stray'],
      removedOrphans: [],
    });
    expect((await client.call(volList, { kind: 'kubelet' })).volumes.map((v) => v.id)).toEqual(['keep']);
    expect(capture.lines.some((l) => String(l.msg).includes('orphan volume dirs'))).toBe(true);
    await stopApp(again);

    const cleaning = await start({ removeOrphans: true });
    expect(cleaning.reconciled.find((r) => r.kind === 'kubelet')).toMatchObject({
      orphans: ['stray'],
      removedOrphans: ['stray'],
    });
    expect(await readdir(join(data, 'kubelet'))).toEqual(['keep']);
    // Stopping does not destroy volumes; --cleanup-on-stop does.
    await stopApp(cleaning);
    expect(await readdir(join(data, 'kubelet'))).toEqual(['keep']);
    await stopApp(await start({ cleanupOnStop: true }));
    expect(await readdir(join(data, 'kubelet'))).toEqual([]);
  });

  it('ends a sync-out promptly and without error when the target is removed mid-copy; bounds every copy in time', async () => {
    const rootfs = await makeOverlayRootfs(
      'volmgr-ovl-',
      async (lower) => {
        await mkdir(join(lower, 'var/lib'), { recursive: true });
      },
      base,
    );
    rootfses.push(rootfs);
    // 1 MB/s: the 8 MB file below would take 8 s to copy.
    await start({ syncTimeoutMs: 2500 }, ['--bwlimit=1000']);
    const docker = volByKind.docker;
    const { mounts } = await client.call(docker.create, {
      id: 'slow',
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: true,
    });
    await writeFile(join(mounts[0]!.source, 'big.layer'), Buffer.alloc(8 * 1024 * 1024, 7));

    const target = join(rootfs.upper, 'var/lib/docker');
    const syncing = client.call(docker.syncOut, { id: 'slow' });
    // The copy is under way once rsync wrote its first (temporary) file into the target.
    await vi.waitFor(async () => expect((await readdir(target).catch(() => [])).length).toBeGreaterThan(0), {
      timeout: 10_000,
      interval: 20,
    });
    await rm(join(rootfs.upper, 'var'), { recursive: true, force: true });
    // An answer, not the typed timeout the 2.5 s bound would give: the vanished target ended the copy.
    await expect(syncing).resolves.toEqual({});

    // Left alone, the same copy runs into its time bound: a typed timeout, and rsync is gone.
    await expectCode(client.call(docker.syncOut, { id: 'slow' }), 'timeout');
    const ps = await import('@sysbox-mgr-ts/exec').then(({ run }) =>
      run('ps', ['-eo', 'args'], { timeout: 5000 }),
    );
    expect(
      ps.stdout.split('\n').filter((l) => l.startsWith('rsync') && l.includes(mounts[0]!.source)),
    ).toEqual([]);
  });

  // Issue #24: ReqMounts' sync-in was cut at --sync-timeout-ms (30 min) where sysbox-runc waits
  // as long as it takes; the gateway now hands each copy the limit of the RPC it serves.
  it("bounds a copy by the caller's timeLimit, else by --sync-timeout-ms", async () => {
    const size = 3 * 1024 * 1024;
    const rootfs = await makeOverlayRootfs(
      'volmgr-ovl-',
      async (lower) => {
        await mkdir(join(lower, 'var/lib/docker'), { recursive: true });
        await writeFile(join(lower, 'var/lib/docker/layer'), Buffer.alloc(size, 7));
      },
      base,
    );
    rootfses.push(rootfs);
    // 1 MB/s: the 3 MB layer takes 3 s to copy, past the 1 s --sync-timeout-ms.
    await start({ syncTimeoutMs: 1000 }, ['--bwlimit=1000']);
    const docker = volByKind.docker;
    const req = {
      rootfs: rootfs.merged,
      mountpoint: '/var/lib/docker',
      uid: OFFSET,
      gid: OFFSET,
      chownOnSync: false,
    };
    await expectCode(client.call(docker.create, { ...req, id: 'cut' }), 'timeout');
    const { mounts } = await client.call(docker.create, { ...req, id: 'whole', timeLimit: 'unbounded' });
    expect((await stat(join(mounts[0]!.source, 'layer'))).size).toBe(size);
    await rm(join(rootfs.upper, 'var'), { recursive: true, force: true });
    await expectCode(client.call(docker.syncOut, { id: 'whole' }), 'timeout');
    await client.call(docker.syncOut, { id: 'whole', timeLimit: 60_000 });
    expect((await stat(join(rootfs.upper, 'var/lib/docker/layer'))).size).toBe(size);
  });

  it('answers hostile ids and paths with typed errors and creates nothing outside the data root', async () => {
    await start();
    const docker = volByKind.docker;
    const rootfs = await mkdtemp(join(base, 'hostile-'));
    const outside = await mkdtemp(join(tmpdir(), 'volmgr-outside-'));
    try {
      await writeFile(join(outside, 'secret'), 'host secret');
      await mkdir(join(rootfs, 'var/lib'), { recursive: true });
      // The image plants /var/lib/docker as a symlink to a host dir.
      await symlink(outside, join(rootfs, 'var/lib/docker'));
      const before = await listAll(base);
      const good = { rootfs, mountpoint: '/var/lib/docker', uid: OFFSET, gid: OFFSET, chownOnSync: true };
      for (const id of ['..', '.', '../escape', 'a/b', '', 'x'.repeat(129), 'nul\u0000']) {
        await expectCode(client.call(docker.create, { ...good, id }), 'invalid-request');
      }
      for (const bad of [
        { rootfs: '/tmp/../etc' },
        { rootfs: 'relative/dir' },
        { mountpoint: 'var/lib/docker' },
        { mountpoint: '/var/lib/../../../etc' },
        { uid: -1 },
        { uid: 2 ** 32 },
      ]) {
        await expectCode(
          client.call(docker.create, { ...good, id: 'h1', ...bad } as never),
          'invalid-request',
        );
      }
      await expectCode(
        client.call(docker.create, { ...good, id: 'h2', rootfs: join(base, 'no-such-rootfs') }),
        'invalid-request',
      );
      const prepOf = (source: string) =>
        client.call(volPrep, { id: 'h1', uid: OFFSET, gid: OFFSET, sources: [{ source, exclusive: false }] });
      await expectCode(prepOf('/'), 'invalid-request');
      await expectCode(prepOf(base), 'invalid-request');
      await expectCode(prepOf(join(base, 'nope')), 'not-found');
      expect(await listAll(base)).toEqual(before);
      expect((await client.call(volList, {})).volumes).toEqual([]);

      // The planted symlink is followed within the rootfs, as the container sees it: the host dir
      // it names is never read (its secret is not synced in).
      await client.call(docker.create, { ...good, id: 'h1' });
      expect(await readdir(join(data, 'docker/h1'))).toEqual([]);
      await client.call(docker.destroy, { id: 'h1' });

      // A container that swaps its sync-out target for a symlink cannot make us write through it.
      await rm(join(rootfs, 'var/lib/docker'));
      await client.call(docker.create, { ...good, id: 'h3' });
      await writeFile(join(data, 'docker/h3/file'), 'x');
      await symlink(outside, join(rootfs, 'var/lib/docker'));
      await expectCode(client.call(docker.syncOut, { id: 'h3' }), 'invalid-request');
      expect(await readdir(outside)).toEqual(['secret']);
      expect((await stat(join(outside, 'secret'))).uid).toBe(0);
      await client.call(docker.destroy, { id: 'h3' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  // Issue #24: an image that links an inner store's mountpoint elsewhere (/var/lib/docker ->
  // /data/docker) made create fail. sysbox-runc mounts the volume where the link leads within the
  // rootfs (runc's securejoin); sync-in reads from there and sync-out writes back there.
  it.each([
    ['absolute', '/data/docker'],
    ['relative', '../../data/docker'],
  ])(
    'follows an %s symlink in the mountpoint within the rootfs, for sync-in and sync-out',
    async (_k, link) => {
      await start();
      const docker = volByKind.docker;
      const rootfs = await mkdtemp(join(base, 'linked-'));
      await mkdir(join(rootfs, 'var/lib'), { recursive: true });
      await mkdir(join(rootfs, 'data/docker/image'), { recursive: true });
      await writeFile(join(rootfs, 'data/docker/image/repositories.json'), '{"busybox":1}');
      await symlink(link, join(rootfs, 'var/lib/docker'));
      const id = `ln-${link.startsWith('/') ? 'abs' : 'rel'}`;
      const reply = await client.call(docker.create, {
        id,
        rootfs,
        mountpoint: '/var/lib/docker',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: true,
      });
      expect(reply.mounts[0]).toMatchObject({
        source: join(data, 'docker', id),
        destination: '/var/lib/docker',
      });
      const inVol = join(data, 'docker', id, 'image/repositories.json');
      expect(await readFile(inVol, 'utf8')).toBe('{"busybox":1}');
      expect((await stat(inVol)).uid).toBe(OFFSET);
      await writeFile(join(data, 'docker', id, 'pulled'), 'by the container');
      await client.call(docker.syncOut, { id });
      expect(await readFile(join(rootfs, 'data/docker/pulled'), 'utf8')).toBe('by the container');
      expect((await lstat(join(rootfs, 'var/lib/docker'))).isSymbolicLink()).toBe(true);
      await client.call(docker.destroy, { id });
    },
  );

  it('prep shifts mismatched sources once, shares an exclusive source with a warning, revert-prep restores the exact owners', async () => {
    await start();
    const src = await mkdtemp(join(base, 'src-'));
    await mkdir(join(src, 'sub'));
    await writeFile(join(src, 'sub/a'), 'a');
    await chown(join(src, 'sub/a'), 1000, 1001);
    await writeFile(join(src, 'b'), 'b');
    await chmod(join(src, 'b'), 0o4755);
    const owned = await mkdtemp(join(base, 'owned-'));
    await chown(owned, OFFSET, OFFSET);
    const original = await snapshotTree(src);
    const req = (id: string) => ({
      id,
      uid: OFFSET,
      gid: OFFSET,
      sources: [
        { source: src, exclusive: true },
        { source: owned, exclusive: false },
      ],
    });

    expect(await client.call(volPrep, req('ca'))).toEqual({ prepared: [src], skipped: [owned] });
    expect(await snapshotTree(src, OFFSET)).toEqual(original);
    expect((await stat(join(src, 'b'))).mode & 0o7777).toBe(0o4755);

    capture.lines.length = 0;
    expect(await client.call(volPrep, req('cb'))).toEqual({ prepared: [], skipped: [src, owned] });
    expect(
      capture.lines.some(
        (l) =>
          l.level === 40 &&
          String(l.msg).includes('ca') &&
          String(l.msg).includes('cb') &&
          String(l.msg).includes(src),
      ),
    ).toBe(true);
    expect(await snapshotTree(src, OFFSET)).toEqual(original);
    const preps = (await client.call(volList, {})).preps;
    expect(preps.find((p) => p.source === src)).toMatchObject({
      id: 'ca',
      holders: ['ca', 'cb'],
      uidOffset: OFFSET,
      gidOffset: OFFSET,
      exclusive: true,
    });

    // The first container leaves while the second still uses the source: nothing moves.
    expect(await client.call(volRevertPrep, { id: 'ca' })).toEqual({ reverted: [] });
    expect(await snapshotTree(src, OFFSET)).toEqual(original);
    expect(await client.call(volRevertPrep, { id: 'cb' })).toEqual({ reverted: [src] });
    expect(await snapshotTree(src)).toEqual(original);
    expect((await stat(owned)).uid).toBe(OFFSET);
    expect((await client.call(volList, {})).preps).toEqual([]);
  });

  it('refuses preps and creates that would turn it against the host, and changes nothing', async () => {
    await start();
    const docker = volByKind.docker;
    // A root-owned tree with setuid and private modes: what a host dir looks like.
    const decoy = await mkdtemp(join(base, 'decoy-'));
    await mkdir(join(decoy, 'ssh'), { mode: 0o700 });
    await writeFile(join(decoy, 'ssh/key'), 'secret', { mode: 0o600 });
    await writeFile(join(decoy, 'tool'), '#!/bin/sh\n');
    await chmod(join(decoy, 'tool'), 0o4755);
    const decoySnapshot = await snapshotTree(decoy);
    const outside = await mkdtemp(join(tmpdir(), 'volmgr-not-a-rootfs-'));
    try {
      await mkdir(join(outside, 'var/lib/docker'), { recursive: true });
      const before = await listAll(base);
      for (const ids of [
        { uid: 0, gid: 0 },
        { uid: 1000, gid: 1000 },
        { uid: OFFSET, gid: 0 },
        { uid: OFFSET + 15 * 65536 + 1, gid: OFFSET },
      ]) {
        await expectCode(
          client.call(volPrep, { id: 'h1', ...ids, sources: [{ source: decoy, exclusive: false }] }),
          'invalid-request',
        );
      }
      for (const source of ['/etc', '/usr', '/lib', '/proc/self']) {
        await expectCode(
          client.call(volPrep, {
            id: 'h1',
            uid: OFFSET,
            gid: OFFSET,
            sources: [{ source, exclusive: false }],
          }),
          'invalid-request',
        );
      }
      const good = { mountpoint: '/var/lib/docker', uid: OFFSET, gid: OFFSET, chownOnSync: true };
      await expectCode(client.call(docker.create, { ...good, id: 'h1', rootfs: outside }), 'invalid-request');
      await expectCode(client.call(docker.create, { ...good, id: 'h1', rootfs: '/etc' }), 'invalid-request');
      await expectCode(
        client.call(docker.create, { ...good, id: 'h1', rootfs: decoy, uid: 1000, gid: 1000 }),
        'invalid-request',
      );
      await expectCode(
        client.call(docker.create, { ...good, id: 'h1', rootfs: decoy, uid: 0, gid: 0 }),
        'invalid-request',
      );
      expect(await snapshotTree(decoy)).toEqual(decoySnapshot);
      expect(await listAll(base)).toEqual(before);
      expect(await client.call(volList, {})).toEqual({ volumes: [], preps: [] });
      // A root-owned volume without a sync shift is upstream's volume for an ID-mapped rootfs.
      await client.call(docker.create, {
        ...good,
        id: 'idmapped',
        rootfs: decoy,
        uid: 0,
        gid: 0,
        chownOnSync: false,
      });
      await client.call(docker.destroy, { id: 'idmapped' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('never takes a path from a forged KV record: destroy, sync-out and list use the derived ones', async () => {
    await start();
    const docker = volByKind.docker;
    const decoy = await mkdtemp(join(base, 'decoy-'));
    await writeFile(join(decoy, 'keep'), 'host data');
    const outside = await mkdtemp(join(tmpdir(), 'volmgr-outside-'));
    try {
      const rootfs = await mkdtemp(join(base, 'rootfs-'));
      const store = createStateStore(await openBucket(nats.nc, volService.bucket), {
        node: `t${testNo}`,
        namespace: 'docker',
        schema: VolumeRecord,
      });
      const record = (id: string, over: Partial<VolumeRecord>): VolumeRecord => ({
        kind: 'docker',
        id,
        path: join(data, 'docker', id),
        rootfs,
        mountpoint: '/var/lib/docker',
        syncOutBase: rootfs,
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: false,
        perm: 0o700,
        createdAt: new Date().toISOString(),
        state: 'ready',
        ...over,
      });
      await store.create('f1', record('f1', { path: decoy }));
      await expectCode(client.call(docker.destroy, { id: 'f1' }), 'internal');
      await expectCode(client.call(docker.syncOut, { id: 'f1' }), 'internal');
      expect(await readdir(decoy)).toEqual(['keep']);
      expect((await client.call(volList, { kind: 'docker' })).volumes[0]?.path).toBe(join(data, 'docker/f1'));

      // The right path, but a sync-out base outside every rootfs root, or a host user as owner.
      await client.call(docker.create, {
        id: 'f2',
        rootfs,
        mountpoint: '/var/lib/docker',
        uid: OFFSET,
        gid: OFFSET,
        chownOnSync: false,
      });
      await writeFile(join(data, 'docker/f2/planted'), 'x');
      await store.mutate('f2', (cur) => cur && { ...cur, syncOutBase: outside, rootfs: outside });
      await expectCode(client.call(docker.syncOut, { id: 'f2' }), 'invalid-request');
      await store.mutate(
        'f2',
        (cur) => cur && { ...cur, syncOutBase: rootfs, rootfs, uid: 0, gid: 0, chownOnSync: true },
      );
      await expectCode(client.call(docker.syncOut, { id: 'f2' }), 'invalid-request');
      expect(await readdir(outside)).toEqual([]);
      expect(await readdir(rootfs)).toEqual([]);
      await client.call(docker.destroy, { id: 'f2' });
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});
