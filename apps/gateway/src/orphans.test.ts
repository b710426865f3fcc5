import { describe, expect, it } from 'vitest';
import { SysboxError, type Contract } from '@sysbox-mgr-ts/contracts';
import { silentLogger, type ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { createOrphanCollector } from './orphans.js';

/** Services as data: what each list answers, and every release asked of them. */
function fakeServices(state: { allocations: string[]; clones: string[]; failFree?: boolean }) {
  const released: string[] = [];
  const client: ServiceClient = {
    node: 'n1',
    async call(contract: Contract, payload: any): Promise<any> {
      const op = `${contract.service}.${contract.endpoint}`;
      switch (op) {
        case 'subid.list':
          return {
            mode: 'exclusive',
            pool: { uid: 165536, gid: 165536, size: 65536 * 8 },
            allocations: state.allocations.map((id, i) => ({
              id,
              uid: 165536 + i * 65536,
              gid: 165536 + i * 65536,
              size: 65536,
            })),
          };
        case 'vol.list':
          return { volumes: [], preps: [] };
        case 'rootfs.list':
          return { clones: state.clones.map((id) => ({ id })), uppers: [] };
        case 'shiftfs.list':
          return { supported: false, marks: [] };
        case 'subid.free':
          if (state.failFree) throw new SysboxError('unavailable', 'allocator restarting');
          state.allocations = state.allocations.filter((a) => a !== payload.id);
          released.push(`${op} ${payload.id}`);
          return {};
        default:
          released.push(`${op} ${payload.id}`);
          return {};
      }
    },
  };
  return { client, released };
}

describe('orphan collection', () => {
  it('releases what no container holds, only after the grace period, and never what the table knows', async () => {
    let t = 0;
    const state = { allocations: ['gone', 'alive'], clones: ['gone'] };
    const { client, released } = fakeServices(state);
    const c = createOrphanCollector({
      services: client,
      known: async (id) => id === 'alive',
      running: async () => [],
      exists: async () => true,
      forget: async () => undefined,
      graceMs: 60_000,
      now: () => t,
      log: silentLogger(),
    });
    expect(await c.scan()).toMatchObject({ waiting: 2, released: [] });
    t = 30_000;
    expect((await c.scan()).released).toEqual([]);
    t = 60_000;
    const r = await c.scan();
    expect(r.released.sort()).toEqual(['rootfs clone of gone', 'subid range of gone']);
    expect(released.sort()).toEqual(['rootfs.remove-clone gone', 'subid.free gone']);
    expect(state.allocations).toEqual(['alive']);
  });

  it('forgets the clock of an orphan that went away by itself, and retries a failed release', async () => {
    let t = 0;
    const state = { allocations: ['x'], clones: [] as string[], failFree: true };
    const { client } = fakeServices(state);
    const c = createOrphanCollector({
      services: client,
      known: async () => false,
      running: async () => [],
      exists: async () => true,
      forget: async () => undefined,
      graceMs: 10,
      now: () => t,
      log: silentLogger(),
    });
    await c.scan();
    t = 20;
    expect((await c.scan()).failed).toHaveLength(1);
    state.failFree = false;
    t = 40;
    expect((await c.scan()).released).toEqual(['subid range of x']);
    // Seen again later: a new orphan with a new clock.
    state.allocations = ['x'];
    t = 41;
    expect((await c.scan()).released).toEqual([]);
  });

  it('unregisters and releases a running container whose rootfs vanished without an Unregister', async () => {
    let t = 0;
    const forgotten: string[] = [];
    const c = createOrphanCollector({
      services: fakeServices({ allocations: [], clones: [] }).client,
      known: async () => true,
      running: async () => [
        { id: 'crashed', path: '/gone' },
        { id: 'fine', path: '/here' },
      ],
      exists: async (p) => p === '/here',
      forget: async (id) => void forgotten.push(id),
      graceMs: 1000,
      now: () => t,
      log: silentLogger(),
    });
    await c.scan();
    expect(forgotten).toEqual([]);
    t = 1000;
    expect((await c.scan()).repaired).toEqual(['crashed']);
    expect(forgotten).toEqual(['crashed']);
  });
});
