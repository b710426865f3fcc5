import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  ALL_SERVICES,
  ContainerId,
  ContainerPath,
  ERROR_CODES,
  ERROR_DESCRIPTIONS,
  GRPC_STATUS,
  HostPath,
  Id,
  NATS_STATUS,
  Offset,
  SysboxError,
  errorCodeFromNatsStatus,
  nodeNameFromHost,
  shiftfsList,
  subidAlloc,
  volByKind,
} from './index.js';

const hostileIds = [
  '',
  '.',
  '..',
  '/',
  '../../etc',
  'a/b',
  'a\0b',
  'a\nb',
  'tab\there',
  'x'.repeat(129),
  ' ',
  'é',
];
const hostilePaths = [
  '',
  'relative/path',
  '/a/../b',
  '/a/./b',
  '/a//b',
  '/a/',
  '/a\0b',
  '/a\nb',
  `/${'x'.repeat(4100)}`,
];

describe('ContainerId', () => {
  it.each(hostileIds)('rejects %j', (id) => {
    expect(ContainerId.safeParse(id).success).toBe(false);
  });
  it.each(['c1', 'abc-def_1.2+3', 'a'.repeat(128), '..a', 'f'.repeat(64)])('accepts %j', (id) => {
    expect(ContainerId.parse(id)).toBe(id);
  });
});

describe('HostPath', () => {
  it.each(hostilePaths)('rejects %j', (p) => {
    expect(HostPath.safeParse(p).success).toBe(false);
  });
  it.each(['/', '/var/lib/sysbox', '/a b/c'])('accepts %j', (p) => {
    expect(HostPath.parse(p)).toBe(p);
  });
});

describe('ContainerPath', () => {
  // What sysbox-runc passes from a container's own config files, as written there.
  it.each([
    ['/var/lib/docker/', '/var/lib/docker'],
    ['//var/lib//docker', '/var/lib/docker'],
    ['/var/lib/docker/.', '/var/lib/docker'],
    ['/var/lib/rancher/k3s/../k3s/data', '/var/lib/rancher/k3s/data'],
    ['/', '/'],
    ['/.', '/'],
  ])('accepts %j as %j', (raw, normalized) => {
    expect(ContainerPath.parse(raw)).toBe(normalized);
  });
  it.each([
    ['', /empty/],
    ['var/lib/docker', /absolute/],
    ['/../etc', /climbs above/],
    ['/var/../../etc', /climbs above/],
    ['/a\0b', /control/],
  ])('refuses %j, naming the rule', (raw, rule) => {
    const r = ContainerPath.safeParse(raw);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.message).join(' ')).toMatch(rule);
  });
});

describe('ids and offsets', () => {
  it('bounds uid/gid to 0..2^32-2', () => {
    expect(Id.safeParse(0).success).toBe(true);
    expect(Id.safeParse(2 ** 32 - 2).success).toBe(true);
    expect(Id.safeParse(2 ** 32 - 1).success).toBe(false);
    expect(Id.safeParse(-1).success).toBe(false);
    expect(Id.safeParse(1.5).success).toBe(false);
  });
  it('bounds offsets to int32', () => {
    expect(Offset.safeParse(-(2 ** 31)).success).toBe(true);
    expect(Offset.safeParse(2 ** 31).success).toBe(false);
  });
});

describe('every request schema refuses hostile ids and paths', () => {
  const contracts = ALL_SERVICES.flatMap((s) => s.contracts);
  const withId = contracts.filter((c) => 'shape' in c.request && 'id' in (c.request as any).shape);
  it('covers the operations that take an id', () => {
    expect(withId.length).toBeGreaterThan(20);
  });
  for (const c of withId) {
    it(`${c.subject('n')} rejects hostile ids`, () => {
      for (const id of hostileIds) {
        const r = c.request.safeParse({ ...validSample(c.subject('n')), id });
        expect(r.success, `${c.endpoint} accepted id ${JSON.stringify(id)}`).toBe(false);
      }
    });
  }
  it('vol create rejects hostile rootfs paths', () => {
    const base = validSample('sysbox.n.vol.docker.create');
    expect(volByKind.docker.create.request.safeParse(base).success).toBe(true);
    for (const rootfs of hostilePaths) {
      expect(volByKind.docker.create.request.safeParse({ ...base, rootfs }).success).toBe(false);
    }
  });
});

function validSample(subject: string): Record<string, unknown> {
  return {
    id: 'c1',
    size: 65536,
    rootfs: '/var/lib/docker/overlay2/x/merged',
    mountpoint: '/var/lib/docker',
    uid: 165536,
    gid: 165536,
    chownOnSync: true,
    sources: [],
    mounts: [],
    createMarkpoint: true,
    origRootfs: '/r',
    uidOffset: 1,
    gidOffset: 1,
    upperDir: '/u',
    subject,
  };
}

describe('error codes', () => {
  it('are mapped to NATS and gRPC statuses and documented', () => {
    for (const code of ERROR_CODES) {
      expect(Number.isInteger(NATS_STATUS[code]), code).toBe(true);
      expect(NATS_STATUS[code]).toBeGreaterThanOrEqual(400);
      expect(GRPC_STATUS[code], code).toBeGreaterThan(0);
      expect(ERROR_DESCRIPTIONS[code].length, code).toBeGreaterThan(10);
    }
  });
  it('round-trip through the NATS status for codes that own their status', () => {
    expect(errorCodeFromNatsStatus(404)).toBe('not-found');
    expect(errorCodeFromNatsStatus(503)).toBe('unavailable');
    expect(errorCodeFromNatsStatus(999)).toBe('internal');
  });
  it('turns unknown throws into internal, keeping the cause', () => {
    const cause = new TypeError('boom');
    const e = SysboxError.from(cause);
    expect(e.code).toBe('internal');
    expect(e.cause).toBe(cause);
    expect(e.name).toBe('SysboxError');
    expect(SysboxError.from(e)).toBe(e);
  });
  it('every contract lists only known codes', () => {
    for (const s of ALL_SERVICES)
      for (const c of s.contracts) for (const e of c.errors) expect(ERROR_CODES).toContain(e);
  });
});

describe('subjects', () => {
  it('follow sysbox.<node>.<service>.<op>', () => {
    expect(subidAlloc.subject('host1')).toBe('sysbox.host1.subid.alloc');
    expect(volByKind.docker.create.subject('host1')).toBe('sysbox.host1.vol.docker.create');
  });
  it('are unique and endpoint names are subject-safe tokens', () => {
    const all = ALL_SERVICES.flatMap((s) => s.contracts);
    expect(new Set(all.map((c) => c.subject('n'))).size).toBe(all.length);
    for (const c of all) expect(c.endpoint).toMatch(/^[a-z0-9-]+$/);
  });
  it('node names from host names are subject-safe', () => {
    expect(nodeNameFromHost('Host.Example.com')).toBe('host-example-com');
    expect(nodeNameFromHost('***')).toBe('node');
  });
});

describe('shiftfs list reply', () => {
  it('carries shiftfs support and shiftfs-on-overlayfs support apart, each with its reason', () => {
    const reply = {
      supported: true,
      supportedOnOverlayfs: false,
      inKernel: true,
      reason: 'shiftfs works',
      reasonOnOverlayfs: 'file rename on shiftfs: EOVERFLOW',
      marks: [],
    };
    expect(shiftfsList.reply.parse(reply)).toEqual(reply);
  });
  it("still takes shiftfs-mgr 0.1's reply, which has supported only", () => {
    expect(shiftfsList.reply.parse({ supported: false, marks: [] })).toEqual({ supported: false, marks: [] });
  });
});

describe('JSON Schemas', () => {
  it('committed files match the zod schemas', () => {
    const script = fileURLToPath(new URL('../../../tools/gen-schemas/gen-schemas.ts', import.meta.url));
    const tsx = fileURLToPath(new URL('../../../node_modules/.bin/tsx', import.meta.url));
    // Throws (non-zero exit) when a schema file is stale or missing.
    execFileSync(tsx, ['--conditions=@sysbox-mgr-ts/source', script, '--check'], { stdio: 'pipe' });
  });
});

describe('every operation may be sent again', () => {
  // A reply lost to a NATS reconnect (a cluster member lost, a failover) leaves the caller not
  // knowing whether the request was carried out: it sends it again, which must end as sending it
  // once. An operation that could not be repeated made a caller wait out its whole bound.
  for (const c of ALL_SERVICES.flatMap((s) => s.contracts)) {
    it(`${c.subject('n')} is idempotent or read-only`, () => {
      expect(Boolean(c.idempotent || c.readOnly)).toBe(true);
    });
  }
});
