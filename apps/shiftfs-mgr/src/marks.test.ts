import { mkdir, mkdtemp, readdir, rm, stat, symlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openMarkStore } from './mark-store.js';
import { createShiftfsMarks, markKey, type ShiftfsMarks, type ShiftfsMarksDeps } from './marks.js';
import { probeShiftfs, type ShiftfsProbe } from './probe.js';
import { FakeKernel, WORKING_SHIFTFS, captureLogger } from '../test/fake-kernel.js';

const rw = (source: string) => ({ source, readonly: false });

describe('shiftfs marks on a real nats-server with a fake kernel', () => {
  const nats = useNatsServer();
  let nc: NatsConnection;
  let nodeCounter = 0;
  let node: string;
  let dir: string;
  let workDir: string;
  let srcA: string;
  let srcB: string;
  let kernel: FakeKernel;

  beforeAll(async () => {
    nc = await nats.ns.connect('operator', { reconnectTimeWait: 50 });
  });
  afterAll(async () => {
    await nc?.close();
  });
  beforeEach(async () => {
    node = `n${++nodeCounter}`;
    dir = await mkdtemp(join(tmpdir(), 'shiftfsmgr-marks-'));
    workDir = join(dir, 'data', 'shiftfs');
    srcA = join(dir, 'a');
    srcB = join(dir, 'b');
    await mkdir(srcA);
    await mkdir(srcB);
    kernel = new FakeKernel();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function open(overrides: Partial<ShiftfsMarksDeps> = {}, conn = nc): Promise<ShiftfsMarks> {
    return createShiftfsMarks({
      store: await openMarkStore(conn, { node, bucket: 'sysbox-shiftfs-test' }),
      mounter: kernel.mounter,
      readMounts: kernel.readMounts,
      workDir,
      dataRoot: join(dir, 'data'),
      probe: WORKING_SHIFTFS,
      log: captureLogger().log,
      ...overrides,
    });
  }

  it('counts references across three containers and two sources; the last holder unmounts', async () => {
    const marks = await open();
    const [a1, b1] = await marks.mark('c1', [rw(srcA), { source: srcB, readonly: true }], true);
    const [a2] = await marks.mark('c2', [rw(srcA)], true);
    const [b3, a3] = await marks.mark('c3', [rw(srcB), rw(srcA)], true);

    expect(kernel.markCalls).toEqual([
      { source: srcA, markpoint: a1!.source },
      { source: srcB, markpoint: b1!.source },
    ]);
    expect(a2!.source).toBe(a1!.source);
    expect(a3!.source).toBe(a1!.source);
    expect(b3!.source).toBe(b1!.source);
    expect(b1!.readonly).toBe(true);
    const holders = Object.fromEntries((await marks.list()).map((m) => [m.source, m.holders]));
    expect(holders).toEqual({ [srcA]: ['c1', 'c2', 'c3'], [srcB]: ['c1', 'c3'] });

    await marks.unmark('c1', [a1!, b1!]);
    await marks.unmark('c2', [a2!]);
    expect(kernel.unmountCalls).toEqual([]);
    expect((await marks.list()).map((m) => m.holders)).toEqual(expect.arrayContaining([['c3'], ['c3']]));

    await marks.unmark('c3', [b3!, a3!]);
    expect(kernel.unmountCalls.sort()).toEqual([a1!.source, b1!.source].sort());
    expect(kernel.marks.size).toBe(0);
    expect(await marks.list()).toEqual([]);
  });

  it('creates uuid markpoint dirs with mode 0700 under <data-root>/shiftfs and removes them with the mark', async () => {
    const marks = await open();
    const [m] = await marks.mark('c1', [rw(srcA)], true);
    expect(m!.source).toMatch(new RegExp(`^${workDir}/[0-9a-f-]{36}$`));
    expect((await stat(m!.source)).mode & 0o7777).toBe(0o700);
    await marks.mark('c2', [rw(srcA)], true);
    await marks.unmark('c1', [m!]);
    expect((await stat(m!.source)).isDirectory()).toBe(true);
    await marks.unmark('c2', [m!]);
    await expect(stat(m!.source)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(workDir)).toEqual([]);
  });

  it('marks the source itself when no markpoint is asked for, and never removes it', async () => {
    const marks = await open();
    const [m] = await marks.mark('c1', [rw(srcA)], false);
    expect(m!.source).toBe(srcA);
    expect(kernel.markCalls).toEqual([{ source: srcA, markpoint: srcA }]);
    expect(await readdir(workDir)).toEqual([]);
    await marks.unmark('c1', [m!]);
    expect(kernel.unmountCalls).toEqual([srcA]);
    expect((await stat(srcA)).isDirectory()).toBe(true);
  });

  it('two spellings of one directory (through a symlink) share one mark', async () => {
    const marks = await open();
    await symlink(srcA, join(dir, 'link'));
    const [viaPath] = await marks.mark('c1', [rw(srcA)], true);
    const [viaLink] = await marks.mark('c2', [rw(join(dir, 'link'))], true);
    expect(viaLink!.source).toBe(viaPath!.source);
    expect(kernel.markCalls).toHaveLength(1);
  });

  it('answers a source already marked by someone else as it is, and does not track it', async () => {
    kernel.foreign.add(srcA);
    const marks = await open();
    const reply = await marks.mark('c1', [rw(srcA), rw(srcB)], true);
    expect(reply[0]).toEqual(rw(srcA));
    expect(kernel.markCalls.map((c) => c.source)).toEqual([srcB]);
    expect((await marks.list()).map((m) => m.source)).toEqual([srcB]);
    await marks.unmark('c1', reply);
    expect(kernel.unmountCalls).toEqual([reply[1]!.source]);
    expect(kernel.foreign.has(srcA)).toBe(true);
  });

  it('on the unsupported kernel of this machine, mark answers unsupported and changes nothing', async (ctx) => {
    const probe = await probeShiftfs({
      modprobe: true,
      precheck: true,
      checkDir: dir,
      log: captureLogger().log,
    });
    if (probe.inKernel) ctx.skip(); // this test is about hosts without shiftfs
    const marks = await open({ probe });
    const err = await marks.mark('c1', [rw(srcA)], true).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unsupported' });
    expect((err as Error).message).toMatch(/no shiftfs/);
    expect(kernel.markCalls).toEqual([]);
    expect(await marks.list()).toEqual([]);
    expect(await readdir(workDir)).toEqual([]);
    await expect(marks.unmark('c1', [rw(join(workDir, 'unknown'))])).resolves.toBeUndefined();
  });

  it("marks where shiftfs is in the kernel but failed the functional check: whether to use it is the runtime's call", async () => {
    const failedCheck: ShiftfsProbe = {
      inKernel: true,
      supported: false,
      reason: 'shiftfs is listed but does not work: file rename on shiftfs: EOVERFLOW',
      onOverlayfs: { supported: false, reason: 'the same' },
    };
    const marks = await open({ probe: failedCheck });
    const [m] = await marks.mark('c1', [rw(srcA)], true);
    expect(kernel.markCalls).toEqual([{ source: srcA, markpoint: m!.source }]);
    await marks.unmark('c1', [m!]);
  });

  it('refuses a source that is not a directory and changes nothing', async () => {
    const marks = await open();
    await expect(marks.mark('c1', [rw(srcA), rw(join(dir, 'missing'))], true)).rejects.toMatchObject({
      code: 'invalid-request',
    });
    expect(kernel.markCalls).toEqual([]);
    expect(await marks.list()).toEqual([]);
  });

  // Issue #24: on shiftfs hosts the kernel headers and modules ReqMounts itself returns,
  // -v /var/run/docker.sock (its dir is /run) and /etc/localtime were refused, so those containers
  // failed. Upstream marks any source on a separate markpoint; a mark changes no ownership.
  it('marks system dirs on a separate markpoint, as upstream: headers, modules, /run, /etc, /', async () => {
    const marks = await open();
    await symlink('/etc', join(dir, 'etc-link'));
    const modules = `/lib/modules/${release()}`;
    // /usr/lib stands for /lib/modules/<release> where this host has none (both system trees).
    const sources = ['/usr/src', '/usr/lib', '/run', join(dir, 'etc-link'), '/'];
    if (existsSync(modules)) sources.push(modules);
    const got = await marks.mark('c1', sources.map(rw), true);
    expect(kernel.markCalls.map((c) => c.source)).toEqual(
      sources.map((s) => (s === join(dir, 'etc-link') ? '/etc' : s)),
    );
    for (const m of got) expect(m.source).toMatch(new RegExp(`^${workDir}/[0-9a-f-]{36}$`));
    await marks.unmark('c1', got);
    expect(kernel.marks.size).toBe(0);
    expect(await marks.list()).toEqual([]);
  });

  it('refuses system dirs and the data root as in-place mark sources, also through a symlink, and changes nothing', async () => {
    const marks = await open();
    await symlink('/etc', join(dir, 'etc-link'));
    for (const source of ['/etc', '/usr/lib', '/', join(dir, 'etc-link'), dir, join(dir, 'data')]) {
      await mkdir(join(dir, 'data'), { recursive: true });
      await expect(marks.mark('c1', [rw(srcA), rw(source)], false), source).rejects.toMatchObject({
        code: 'invalid-request',
      });
    }
    expect(kernel.markCalls).toEqual([]);
    expect(await marks.list()).toEqual([]);
  });

  it('never unmounts the markpoint a forged record names', async () => {
    const marks = await open();
    const store = await openMarkStore(nc, { node, bucket: 'sysbox-shiftfs-test' });
    const since = new Date().toISOString();
    await store.create(markKey(srcA), {
      source: srcA,
      markpoint: '/etc',
      createdMarkpoint: true,
      holders: ['c1'],
      state: 'mounted',
      markedAt: since,
      since,
      claimId: 'forged',
    });
    await expect(marks.unmark('c1', [rw('/etc')])).rejects.toMatchObject({
      code: 'internal',
      message: expect.stringContaining('/etc'),
    });
    expect(kernel.unmountCalls).toEqual([]);
    await store.delete(markKey(srcA));
  });

  it('a mark that fails half way drops the holds it took: nothing stays mounted or recorded', async () => {
    const marks = await open();
    const [held] = await marks.mark('c0', [rw(srcA)], true);
    kernel.failMarkOf.add(srcB);
    await expect(marks.mark('c1', [rw(srcA), rw(srcB)], true)).rejects.toThrow(/mark of .* fails/);
    const list = await marks.list();
    expect(list.map((m) => [m.source, m.holders])).toEqual([[srcA, ['c0']]]);
    expect([...kernel.marks.keys()]).toEqual([held!.source]);
    expect(await readdir(workDir)).toEqual([held!.source.split('/').pop()]);
  });

  it('is idempotent per container: a repeated mark holds once, a repeated unmark is a no-op', async () => {
    const marks = await open();
    const [m] = await marks.mark('c1', [rw(srcA)], true);
    await marks.mark('c1', [rw(srcA)], true);
    expect((await marks.list())[0]!.holders).toEqual(['c1']);
    await marks.unmark('c1', [m!]);
    await marks.unmark('c1', [m!]);
    expect(kernel.unmountCalls).toEqual([m!.source]);
  });

  it('restart (new connection, server restarted) keeps every mark and its holders', async () => {
    const first = await open();
    const [a] = await first.mark('c1', [rw(srcA)], true);
    await first.mark('c2', [rw(srcA), rw(srcB)], true);
    await nats.ns.restart();
    const nc2 = await nats.ns.connect();
    try {
      const again = await open({}, nc2);
      expect(await again.reconcile()).toEqual({ kept: 2, dropped: [], removedDirs: [] });
      const holders = Object.fromEntries((await again.list()).map((m) => [m.source, m.holders]));
      expect(holders).toEqual({ [srcA]: ['c1', 'c2'], [srcB]: ['c2'] });
      await again.unmark('c1', [a!]);
      await again.unmark('c2', [a!]);
      expect(kernel.unmountCalls).toEqual([a!.source]);
    } finally {
      await nc2.close();
    }
  });

  it('reconcile drops and reports marks whose mount is gone', async () => {
    const marks = await open();
    const [a] = await marks.mark('c1', [rw(srcA)], true);
    const [b] = await marks.mark('c1', [rw(srcB)], true);
    kernel.marks.delete(a!.source); // an operator unmounted it behind our back
    const { log, lines } = captureLogger();
    const restarted = await open({ log });
    const report = await restarted.reconcile();
    expect(report).toEqual({
      kept: 1,
      dropped: [
        { source: srcA, markpoint: a!.source, holders: ['c1'], reason: 'mount is gone from mountinfo' },
      ],
      removedDirs: [],
    });
    expect(
      lines().some(
        (l) => l.msg === 'dropped a shiftfs mark whose mount is gone' && l.markpoint === a!.source,
      ),
    ).toBe(true);
    await expect(stat(a!.source)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await restarted.list()).map((m) => m.markpoint)).toEqual([b!.source]);
  });

  it('reconcile tears down a claim abandoned between mount and commit, and leaves a fresh one alone', async () => {
    let clock = Date.now();
    const marks = await open({ now: () => clock, staleAfterMs: 1000 });
    const store = await openMarkStore(nc, { node, bucket: 'sysbox-shiftfs-test' });
    const markpoint = join(workDir, 'crashed');
    await mkdir(markpoint, { mode: 0o700 });
    await kernel.mounter.mark(srcA, markpoint); // the crash came after the mount
    const since = new Date(clock).toISOString();
    const base = {
      createdMarkpoint: true,
      holders: ['c1'],
      state: 'mounting' as const,
      markedAt: since,
      since,
    };
    await store.create(markKey(srcA), { ...base, source: srcA, markpoint, claimId: 'x1' });
    await store.create(markKey(srcB), {
      ...base,
      source: srcB,
      markpoint: join(workDir, 'in-flight'),
      claimId: 'x2',
    });

    expect(await marks.reconcile()).toEqual({ kept: 2, dropped: [], removedDirs: [] });
    clock += 5000;
    const report = await marks.reconcile();
    expect(report.dropped.map((d) => [d.source, d.reason])).toEqual(
      expect.arrayContaining([
        [srcA, 'abandoned while mounting'],
        [srcB, 'abandoned while mounting'],
      ]),
    );
    expect(kernel.unmountCalls).toEqual([markpoint]);
    await expect(stat(markpoint)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await marks.list()).toEqual([]);
  });

  it('reconcile removes empty stray uuid dirs, and leaves named, mounted and foreign ones', async () => {
    const marks = await open();
    const [live] = await marks.mark('c1', [rw(srcA)], true);
    const stray = join(workDir, '0b7e4a52-3f0e-4c1e-9d5e-2a6f1c0d9e11');
    const busy = join(workDir, '1c8f5b63-4a1f-4d2f-8e6f-3b7a2d1e0f22');
    const notOurs = join(workDir, 'operator-notes');
    for (const d of [stray, busy, notOurs]) await mkdir(d);
    kernel.foreign.add(busy);
    const report = await marks.reconcile();
    expect(report.removedDirs).toEqual([stray]);
    expect((await readdir(workDir)).sort()).toEqual(
      [live!.source.split('/').pop(), busy.split('/').pop(), 'operator-notes'].sort(),
    );
  });

  it('a mark waiting on an abandoned claim takes it over and mounts afresh', async () => {
    const clock = Date.now();
    const marks = await open({ now: () => clock, staleAfterMs: 1000, pollMs: 5 });
    const store = await openMarkStore(nc, { node, bucket: 'sysbox-shiftfs-test' });
    const since = new Date(clock - 60_000).toISOString();
    await store.create(markKey(srcA), {
      source: srcA,
      markpoint: join(workDir, 'never-made'),
      createdMarkpoint: true,
      holders: ['dead'],
      state: 'mounting',
      markedAt: since,
      since,
      claimId: 'old',
    });
    const [m] = await marks.mark('c1', [rw(srcA)], true);
    expect(m!.source).not.toBe(join(workDir, 'never-made'));
    expect((await marks.list()).map((x) => [x.holders, x.state])).toEqual([[['c1'], 'mounted']]);
  });

  it('concurrent marks of one source from two replicas mount once; unmounts wait for the last holder', async () => {
    kernel.delayMs = 30;
    const nc2 = await nats.ns.connect();
    try {
      const replicas = [await open({ pollMs: 5 }), await open({ pollMs: 5 }, nc2)];
      const ids = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
      const replies = await Promise.all(ids.map((id, i) => replicas[i % 2]!.mark(id, [rw(srcA)], true)));
      expect(kernel.markCalls).toHaveLength(1);
      expect(new Set(replies.map((r) => r[0]!.source)).size).toBe(1);
      expect((await replicas[0]!.list())[0]!.holders.sort()).toEqual(ids);

      const markpoint = replies[0]![0]!;
      // Five leave while a seventh joins, all at once: c6 holds throughout, so nothing may unmount.
      await Promise.all([
        ...ids.slice(0, 5).map((id, i) => replicas[i % 2]!.unmark(id, [markpoint])),
        replicas[1]!.mark('c7', [rw(srcA)], true),
      ]);
      expect(kernel.unmountCalls).toEqual([]);
      expect(kernel.markCalls).toHaveLength(1);
      expect((await replicas[1]!.list())[0]!.holders.sort()).toEqual(['c6', 'c7']);

      await Promise.all([replicas[0]!.unmark('c6', [markpoint]), replicas[1]!.unmark('c7', [markpoint])]);
      expect(kernel.unmountCalls).toEqual([markpoint.source]);
      expect(await replicas[0]!.list()).toEqual([]);
    } finally {
      await nc2.close();
    }
  });

  it('a replica whose markpoint hint went stale leaves a newer mark of the same source alone', async () => {
    const nc2 = await nats.ns.connect();
    try {
      const a = await open();
      const b = await open({}, nc2);
      const [old] = await a.mark('c1', [rw(srcA)], true);
      await b.unmark('c1', [old!]);
      const [fresh] = await b.mark('c2', [rw(srcA)], true);
      expect(fresh!.source).not.toBe(old!.source);
      await a.unmark('c1', [old!]);
      await a.unmark('c2', [old!]);
      expect(kernel.unmountCalls).toEqual([old!.source]);
      expect((await a.list()).map((m) => [m.markpoint, m.holders])).toEqual([[fresh!.source, ['c2']]]);
    } finally {
      await nc2.close();
    }
  });

  it('unmark-all removes every mark best effort and reports the ones that fail', async () => {
    const marks = await open();
    const [a] = await marks.mark('c1', [rw(srcA)], true);
    const [b] = await marks.mark('c2', [rw(srcB)], false);
    kernel.failUnmountOf.add(b!.source);
    const reply = await marks.unmarkAll();
    expect(reply.unmarked).toEqual([a!.source]);
    expect(reply.failures).toEqual([
      { markpoint: b!.source, error: expect.stringMatching(/unmount of .* fails/) },
    ]);
    expect((await marks.list()).map((m) => [m.markpoint, m.state])).toEqual([[b!.source, 'unmounting']]);
    await expect(stat(a!.source)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
