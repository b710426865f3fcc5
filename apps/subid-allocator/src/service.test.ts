/**
 * The service over a real nats-server: two replicas (two serve() instances on two connections,
 * one queue group, one KV bucket), every error code as a client sees it, a restart, and the
 * real daemon killed with SIGKILL in the middle of a burst.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  SUBID_BLOCK,
  subidAlloc,
  subidFree,
  subidList,
  subidService,
  subidSummary,
  type SubidAllocReply,
} from '@sysbox-mgr-ts/contracts';
import { startProcess } from '@sysbox-mgr-ts/exec';
import {
  silentLogger,
  createServiceClient,
  serve,
  type Binding,
  type MicroService,
} from '@sysbox-mgr-ts/service-kit';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createSubidAlloc, type SubidMode } from './allocator.js';
import { setupSubidPool } from './hostfiles.js';
import { createSubidBindings } from './service.js';
import { openSubidStores } from './subid-store.js';

const B = SUBID_BLOCK;
const silent = silentLogger;

/** Every pair of ranges is disjoint. */
function overlaps(ranges: readonly { uid: number; size: number }[]): number {
  const sorted = [...ranges].sort((a, b) => a.uid - b.uid);
  return sorted.filter((r, i) => i > 0 && sorted[i - 1]!.uid + sorted[i - 1]!.size > r.uid).length;
}

describe('subid service on a real nats-server', () => {
  const nats = useNatsServer();
  let dir: string;
  const connections: NatsConnection[] = [];
  let services: MicroService[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'subid-alloc-svc-'));
  });
  afterEach(async () => {
    await Promise.all(services.map((s) => s.stop()));
    services = [];
  });
  afterAll(async () => {
    await Promise.all(connections.map((nc) => nc.close()));
    await rm(dir, { recursive: true, force: true });
  });

  const connection = async () => {
    const nc = await nats.ns.connect();
    connections.push(nc);
    return nc;
  };

  /** One replica: its own connection, allocator and micro service; counts what it handled. */
  const replica = async (node: string, mode: SubidMode, pool: { start: number; size: number }) => {
    const nc = await connection();
    const stores = await openSubidStores(nc, { node });
    const counted = { n: 0 };
    const bindings: Binding[] = createSubidBindings({
      allocator: createSubidAlloc({ mode, pool, stores }),
    }).map((b) => ({
      contract: b.contract,
      handler: (req, ctx) => {
        counted.n++;
        return b.handler(req, ctx);
      },
    }));
    services.push(serve({ nc, service: subidService, node, version: '0.0.0', log: silent(), bindings }));
    return counted;
  };

  it('200 concurrent allocs over two replicas: 200 distinct, non-overlapping blocks filling the pool, then exhausted', async () => {
    const hostFiles = {
      subuidFile: join(dir, 'subuid'),
      subgidFile: join(dir, 'subgid'),
      loginDefs: join(dir, 'none'),
    };
    const pool = await setupSubidPool({ ...hostFiles, user: 'sysbox', size: 200 * B });
    expect(await readFile(hostFiles.subuidFile, 'utf8')).toBe(`sysbox:100000:${200 * B}\n`);
    const [r1, r2] = [await replica('two', 'exclusive', pool), await replica('two', 'exclusive', pool)];
    const client = createServiceClient(await connection(), { node: 'two', timeoutMs: 15_000 });

    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => client.call(subidAlloc, { id: `c${i}`, size: B })),
    );
    expect(new Set(replies.map((r) => r.uid)).size).toBe(200);
    expect(overlaps(replies)).toBe(0);
    expect(
      replies.every(
        (r) => r.uid === r.gid && r.uid >= pool.start && r.uid + r.size <= pool.start + pool.size,
      ),
    ).toBe(true);
    expect(r1.n).toBeGreaterThan(0);
    expect(r2.n).toBeGreaterThan(0);
    await expect(client.call(subidAlloc, { id: 'c200', size: B })).rejects.toMatchObject({
      code: 'exhausted',
    });

    const list = await client.call(subidList, {});
    expect(list.allocations).toHaveLength(200);
    expect(list.allocations.find((a) => a.id === 'c7')).toMatchObject({ uid: replies[7]!.uid, size: B });

    // The counts a fleet inventory reads, from the stores' keys.
    expect(await client.call(subidSummary, {})).toEqual({
      mode: 'exclusive',
      pool: { uid: pool.start, gid: pool.start, size: 200 * B },
      allocations: 200,
      idsClaimed: 200 * B,
    });
    await client.call(subidFree, { id: 'c7' });
    expect(await client.call(subidSummary, {})).toMatchObject({ allocations: 199, idsClaimed: 199 * B });
    // It takes an empty request only.
    await expect(client.call(subidSummary, { all: true } as never)).rejects.toMatchObject({
      code: 'invalid-request',
    });
  });

  it('more concurrent allocs than blocks, mixed sizes: exhausted exactly for what does not fit', async () => {
    const pool = { start: 100000, size: 100 * B };
    await replica('over', 'exclusive', pool);
    await replica('over', 'exclusive', pool);
    const client = createServiceClient(await connection(), { node: 'over', timeoutMs: 15_000 });
    // 60 singles and 30 doubles: 120 blocks wanted, 100 available.
    const sizes = Array.from({ length: 90 }, (_, i) => (i % 3 === 2 ? 2 * B : B));
    const results = await Promise.allSettled(
      sizes.map((size, i) => client.call(subidAlloc, { id: `m${i}`, size })),
    );
    const granted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as { code: string }] : []));
    expect(refused.every((e) => e.code === 'exhausted')).toBe(true);
    expect(overlaps(granted)).toBe(0);
    const usedBlocks = granted.reduce((n, r) => n + r.size / B, 0);
    expect(usedBlocks).toBeLessThanOrEqual(100);
    // Whatever was refused could not fit: at most one free block remains when a double was refused.
    const refusedSingles = results.filter((r, i) => r.status === 'rejected' && sizes[i] === B).length;
    if (refusedSingles > 0) expect(usedBlocks).toBe(100);
    else expect(usedBlocks).toBeGreaterThanOrEqual(99);
  });

  it('answers every error code of its contracts, and the same block for the same id', async () => {
    const pool = { start: 100000, size: 2 * B };
    await replica('errs', 'exclusive', pool);
    const client = createServiceClient(await connection(), { node: 'errs' });
    const first = await client.call(subidAlloc, { id: 'web', size: B });
    expect(await client.call(subidAlloc, { id: 'web', size: B })).toEqual(first);
    for (const size of [0, B / 2, 3 * B, 2 ** 32 + B]) {
      await expect(client.call(subidAlloc, { id: 'x', size })).rejects.toMatchObject({
        code: 'invalid-size',
      });
    }
    await client.call(subidAlloc, { id: 'db', size: B });
    await expect(client.call(subidAlloc, { id: 'x', size: B })).rejects.toMatchObject({ code: 'exhausted' });
    await expect(client.call(subidFree, { id: 'nobody' })).rejects.toMatchObject({ code: 'not-found' });
    const nc = await connection();
    const raw = await nc.request(subidAlloc.subject('errs'), JSON.stringify({ id: '../etc', size: B }));
    expect(raw.headers?.get('Nats-Service-Error-Code')).toBe('400');
    expect(JSON.parse(raw.string())).toMatchObject({ error: { code: 'invalid-request' } });
    await client.call(subidFree, { id: 'web' });
    expect(await client.call(subidAlloc, { id: 'x', size: B })).toEqual(first);
  });

  it('shared mode: everyone gets the pool start; free of a known id succeeds, of an unknown one is not-found', async () => {
    await replica('shared', 'shared', { start: 165536, size: B });
    const client = createServiceClient(await connection(), { node: 'shared' });
    const replies = await Promise.all(['a', 'b', 'c'].map((id) => client.call(subidAlloc, { id, size: B })));
    expect(replies).toEqual(Array(3).fill({ uid: 165536, gid: 165536, size: B }));
    await expect(client.call(subidAlloc, { id: 'd', size: 2 * B })).rejects.toMatchObject({
      code: 'invalid-size',
    });
    await client.call(subidFree, { id: 'b' });
    await expect(client.call(subidFree, { id: 'b' })).rejects.toMatchObject({ code: 'not-found' });
    expect(await client.call(subidList, {})).toMatchObject({
      mode: 'shared',
      pool: { uid: 165536, gid: 165536, size: B },
      allocations: [{ id: 'a' }, { id: 'c' }],
    });
  });

  it('state survives restarting the app and the server', async () => {
    const pool = { start: 100000, size: 8 * B };
    await replica('restart', 'exclusive', pool);
    let client = createServiceClient(await connection(), { node: 'restart' });
    const a = await client.call(subidAlloc, { id: 'a', size: 2 * B });
    const b = await client.call(subidAlloc, { id: 'b', size: B });
    await Promise.all(services.map((s) => s.stop()));
    services = [];
    await nats.ns.restart();

    await replica('restart', 'exclusive', pool);
    client = createServiceClient(await connection(), { node: 'restart' });
    expect((await client.call(subidList, {})).allocations.map((r) => [r.id, r.uid, r.size])).toEqual([
      ['a', a.uid, 2 * B],
      ['b', b.uid, B],
    ]);
    expect(await client.call(subidAlloc, { id: 'a', size: 2 * B })).toEqual(a);
    expect((await client.call(subidAlloc, { id: 'c', size: B })).uid).toBe(b.uid + B);
  });

  it('the daemon killed with SIGKILL during a burst loses no acknowledged allocation and leaks none', async () => {
    const N = 200;
    const appDir = resolve(import.meta.dirname, '..');
    const env = {
      NATS_URL: nats.ns.url,
      NATS_CREDS: nats.ns.credentials('subid-allocator'),
      SYSBOX_NODE: 'kill',
      LOG_LEVEL: 'warn',
    };
    // node itself with the tsx loader, not the tsx CLI: the CLI runs the daemon as a child that
    // a SIGKILL of the CLI would leave running.
    const args = [
      '--conditions=@sysbox-mgr-ts/source',
      '--import',
      'tsx',
      'src/main.ts',
      '--mode',
      'exclusive',
      '--pool-size',
      String(N * B),
      '--subuid-file',
      join(dir, 'kill-subuid'),
      '--subgid-file',
      join(dir, 'kill-subgid'),
      '--login-defs',
      join(dir, 'kill-login.defs'),
    ];
    const start = () =>
      startProcess(process.execPath, args, { cwd: appDir, env, output: { file: join(dir, 'daemon.log') } });
    const client = createServiceClient(await connection(), { node: 'kill', timeoutMs: 5_000 });
    const ready = async () => {
      for (let i = 0; i < 150; i++) {
        if (
          await client.call(subidList, {}, { timeoutMs: 500 }).then(
            () => true,
            () => false,
          )
        )
          return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(
        `daemon did not answer:\n${await readFile(join(dir, 'daemon.log'), 'utf8').catch(() => '')}`,
      );
    };

    let daemon = start();
    try {
      await ready();
      expect(await readFile(join(dir, 'kill-subuid'), 'utf8')).toBe(`sysbox:100000:${N * B}\n`);
      // Requests trickle in (one every 2 ms) so the kill lands while some are in flight.
      const acknowledged: { id: string; reply: SubidAllocReply }[] = [];
      let cutOff = 0;
      const burst: Promise<void>[] = [];
      for (let i = 0; i < N; i++) {
        burst.push(
          client.call(subidAlloc, { id: `k${i}`, size: B }, { timeoutMs: 2_000 }).then(
            (reply) => {
              acknowledged.push({ id: `k${i}`, reply });
              if (acknowledged.length === 40) daemon.kill('SIGKILL');
            },
            () => void cutOff++,
          ),
        );
        await new Promise((r) => setTimeout(r, 2));
      }
      await Promise.all(burst);
      await daemon.catch(() => undefined);
      expect(acknowledged.length).toBeGreaterThanOrEqual(40);
      expect(cutOff).toBeGreaterThan(0);

      daemon = start();
      await ready();
      const after = (await client.call(subidList, {})).allocations;
      for (const { id, reply } of acknowledged) expect(after.find((r) => r.id === id)).toMatchObject(reply);
      expect(overlaps(after)).toBe(0);
      // Retrying every id (as sysbox-runc would) yields one block each; freeing them all leaves
      // nothing listed and no block claimed.
      const retried = await Promise.all(
        Array.from({ length: N }, (_, i) => client.call(subidAlloc, { id: `k${i}`, size: B })),
      );
      expect(overlaps(retried)).toBe(0);
      await Promise.all(Array.from({ length: N }, (_, i) => client.call(subidFree, { id: `k${i}` })));
      expect((await client.call(subidList, {})).allocations).toEqual([]);
      const state = await openSubidStores(await connection(), { node: 'kill' });
      const claims = await Promise.all((await state.blocks.keys()).map((key) => state.blocks.get(key)));
      expect(claims.filter(Boolean)).toEqual([]);
    } finally {
      daemon.kill('SIGKILL');
      await daemon.catch(() => undefined);
    }
  }, 25_000);
});
