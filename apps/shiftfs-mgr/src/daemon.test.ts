/**
 * The daemon as a process (main.ts through tsx): start-up reconcile, $SRV metadata, and a
 * kill -9 followed by a restart. On this kernel marks cannot be made, so the surviving state is
 * seeded into KV the way a previous run would have left it.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { shiftfsList, shiftfsMark } from '@sysbox-mgr-ts/contracts';
import type { startProcess } from '@sysbox-mgr-ts/exec';
import { createServiceClient, decodeJson } from '@sysbox-mgr-ts/service-kit';
import { startAppDaemon } from '@sysbox-mgr-ts/test-nats';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { markKey } from './marks.js';
import { openMarkStore } from './mark-store.js';
import { listsShiftfs } from './probe.js';

const appDir = new URL('..', import.meta.url).pathname;

describe('sysbox-shiftfs-mgr process', () => {
  const nats = useNatsServer();
  let dir: string;
  const children: ReturnType<typeof startProcess>[] = [];

  /** Starts main.ts and resolves with a reader of its log once it says "started". */
  async function startDaemon(): Promise<{ proc: ReturnType<typeof startProcess>; logs: () => string }> {
    const d = await startAppDaemon({
      appDir,
      ns: nats.ns,
      identity: 'shiftfs-mgr',
      args: ['--node', 'd1', '--data-root', join(dir, 'root'), '--no-modprobe'],
      startTimeoutMs: 15_000,
    });
    children.push(d.proc);
    return d;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shiftfsmgr-daemon-'));
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await Promise.allSettled(children);
    await rm(dir, { recursive: true, force: true });
  });

  it('drops a recorded mark whose mount is gone, publishes its probe, and comes back after kill -9', async () => {
    const store = await openMarkStore(nats.nc, { node: 'd1' });
    const source = join(dir, 'src');
    const markpoint = join(dir, 'root', 'shiftfs', randomUUID());
    await mkdir(source);
    await mkdir(markpoint, { recursive: true });
    const at = new Date().toISOString();
    await store.create(markKey(source), {
      source,
      markpoint,
      createdMarkpoint: true,
      holders: ['c1'],
      state: 'mounted',
      markedAt: at,
      since: at,
      claimId: 'seeded',
    });

    const first = await startDaemon();
    const dropped = first
      .logs()
      .split('\n')
      .filter((l) => l.includes('dropped a shiftfs mark whose mount is gone'))
      .map((l) => JSON.parse(l) as { markpoint: string; holders: string[] });
    expect(dropped).toEqual([expect.objectContaining({ markpoint, holders: ['c1'] })]);
    await expect(stat(markpoint)).rejects.toMatchObject({ code: 'ENOENT' });

    const info = decodeJson(
      (await nats.nc.request('$SRV.INFO.sysbox-shiftfs', undefined, { timeout: 2000 })).data,
    ) as {
      metadata: Record<string, string>;
    };
    const hostHasShiftfs = listsShiftfs(await readFile('/proc/filesystems', 'utf8'));
    expect(info.metadata).toMatchObject({ node: 'd1', shiftfs: String(hostHasShiftfs) });

    // Both answers are logged at start with their reasons, and listed.
    const startLines = first
      .logs()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const plain = startLines.find((l) => 'shiftfs' in l)!;
    const overlay = startLines.find((l) => 'shiftfsOnOverlayfs' in l)!;
    expect(plain).toMatchObject({
      shiftfs: hostHasShiftfs,
      inKernel: hostHasShiftfs,
      msg: expect.any(String),
    });
    expect(overlay).toMatchObject({ shiftfsOnOverlayfs: expect.any(Boolean), msg: expect.any(String) });
    if (!hostHasShiftfs)
      expect(plain.msg).toMatch(
        /^this kernel has no shiftfs \(not listed in \/proc\/filesystems; modprobe skipped/,
      );
    const client = createServiceClient(nats.nc, { node: 'd1', timeoutMs: 3000 });
    expect(await client.call(shiftfsList, {})).toEqual({
      supported: plain.shiftfs,
      supportedOnOverlayfs: overlay.shiftfsOnOverlayfs,
      inKernel: hostHasShiftfs,
      reason: plain.msg,
      reasonOnOverlayfs: overlay.msg,
      marks: [],
    });
    if (!hostHasShiftfs) {
      await expect(
        client.call(shiftfsMark, { id: 'c2', mounts: [{ source, readonly: false }], createMarkpoint: true }),
      ).rejects.toMatchObject({
        code: 'unsupported',
      });
    }

    first.proc.kill('SIGKILL');
    await first.proc;
    await startDaemon();
    expect((await client.call(shiftfsList, {})).supported).toBe(hostHasShiftfs);
  });
});
