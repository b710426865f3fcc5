/**
 * What the cloner tests share: a real nats-server for the cloner's state, a runtime rootfs built
 * afresh per test in a scratch dir whose mounts are checked gone and removed after it, cloners
 * made over both (one per simulated daemon start), and the owner checks of a shift. Not part of the
 * app's API.
 */
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootfsService } from '@sysbox-mgr-ts/contracts';
import { createStateStore, openBucket, type KvStateStore } from '@sysbox-mgr-ts/kv-state';
import { mountsUnder, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { useNatsServer, type NatsFixture } from '@sysbox-mgr-ts/test-nats/vitest';
import { shift } from '@sysbox-mgr-ts/id-shift';
import { afterEach, beforeAll, expect } from 'vitest';
import { CloneRecord, UpperRecord, createCloner, type Cloner, type ShiftIds } from '../src/cloner.js';
import { createMounter } from '../src/mounter.js';
import { buildRuntimeRootfs, testGuard, unmountAllUnder, type RuntimeRootfs } from './rootfs.js';

export const OFFSET = 165536;
export const BOOT_1 = '11111111-1111-4111-8111-111111111111';
export const BOOT_2 = '22222222-2222-4222-8222-222222222222';
const silent = silentLogger();
export const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

/** Every entry of `now` is its entry in `before` shifted by `offset`, and nothing else is there. */
export const expectShiftedBy = (
  before: Map<string, string>,
  now: Map<string, string>,
  offset: number,
): void => {
  expect(now.size).toBe(before.size);
  for (const [path, owner] of before) {
    const [u, g] = owner.split(':').map(Number);
    expect([path, now.get(path)]).toEqual([path, `${u! + offset}:${g! + offset}`]);
  }
};

/** Some entries at their original owners and some at original + offset: what a killed walk leaves. */
export const expectMixed = (before: Map<string, string>, now: Map<string, string>): void => {
  const moved = [...before].filter(([path, owner]) => now.get(path) !== owner).length;
  expect(moved).toBeGreaterThan(0);
  expect(moved).toBeLessThan(before.size);
};

export interface ClonerRig {
  readonly nats: NatsFixture;
  /** The test's scratch dir, the only allowed rootfs root (set by `setup`). */
  readonly base: string;
  readonly dataRoot: string;
  readonly fixtureDir: string;
  readonly fx: RuntimeRootfs;
  /** Builds the scratch dir and the runtime rootfs of one test. */
  setup(opts?: { relativeLowerDirs?: boolean }): Promise<void>;
  /** A cloner as a daemon of `node` started in boot `bootId` would make it. */
  makeCloner(node?: string, bootId?: string): Promise<Cloner>;
  /** The state stores a cloner of `node` uses, to write what a daemon killed mid-shift leaves. */
  storesOf(node?: string): Promise<{ clones: KvStateStore<CloneRecord>; uppers: KvStateStore<UpperRecord> }>;
}

/** Registers the rig's hooks in the calling `describe`. */
export function useClonerRig(): ClonerRig {
  const nats = useNatsServer();
  let base: string;
  let dataRoot: string;
  let shiftIds: ShiftIds;

  const makeCloner = async (node = 'n1', bootId = BOOT_1): Promise<Cloner> => {
    const kv = await openBucket(nats.nc, rootfsService.bucket);
    return createCloner({
      dataRoot,
      clones: createStateStore(kv, { node, namespace: 'clone', schema: CloneRecord }),
      uppers: createStateStore(kv, { node, namespace: 'upper', schema: UpperRecord }),
      mounter: createMounter({ timeoutMs: 10_000 }),
      shiftIds,
      log: silent,
      pageSize: 4096,
      shiftTimeoutMs: 20_000,
      readMounts: () => readMountInfo(),
      guard: await testGuard(base, dataRoot),
      bootId,
    });
  };

  beforeAll(async () => {
    shiftIds = shift;
  });

  const storesOf = async (node = 'n1') => {
    const kv = await openBucket(nats.nc, rootfsService.bucket);
    return {
      clones: createStateStore(kv, { node, namespace: 'clone', schema: CloneRecord }),
      uppers: createStateStore(kv, { node, namespace: 'upper', schema: UpperRecord }),
    };
  };

  let fixtureDir: string;
  let fx: RuntimeRootfs;
  const setup = async (opts: { relativeLowerDirs?: boolean } = {}) => {
    base = await mkdtemp(join(tmpdir(), 'rfc-clone-'));
    dataRoot = join(base, 'data');
    fixtureDir = join(base, 'runtime');
    fx = await buildRuntimeRootfs(fixtureDir, opts);
  };
  afterEach(async () => {
    if (!base) return;
    await unmountAllUnder(base);
    expect(mountsUnder(await readMountInfo(), base)).toEqual([]);
    await rm(base, { recursive: true, force: true });
    base = '';
  });

  return {
    nats,
    get base() {
      return base;
    },
    get dataRoot() {
      return dataRoot;
    },
    get fixtureDir() {
      return fixtureDir;
    },
    get fx() {
      return fx;
    },
    setup,
    makeCloner,
    storesOf,
  };
}
