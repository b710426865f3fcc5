import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '@sysbox-mgr-ts/service-kit';
import { createReplyChecks, type ReplyChecks } from './reply-checks.js';

let dir: string;
let checks: ReplyChecks;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gw-reply-checks-'));
  await writeFile(join(dir, 'subuid'), 'sysbox:165536:131072\nother:1000000:65536\n');
  await writeFile(join(dir, 'subgid'), 'sysbox:165536:65536\n');
  checks = createReplyChecks(
    { dataRoot: '/srv/sysbox', subuidFile: join(dir, 'subuid'), subgidFile: join(dir, 'subgid') },
    silentLogger(),
  );
});

afterAll(() => rm(dir, { recursive: true, force: true }));

const bind = (source: string) => ({
  source,
  destination: '/var/lib/docker',
  type: 'bind',
  options: ['rbind'],
});

describe('volume mounts from vol-mgr', () => {
  it('accepts the volume’s own dir under the data root', () => {
    const mounts = [bind('/srv/sysbox/rancher-k3s/c1')];
    expect(checks.volumeMounts('c1', 'k3s', mounts)).toBe(mounts);
    expect(checks.volumeMounts('c1', 'docker', [])).toEqual([]);
  });

  it.each([
    ['another data root', '/var/lib/sysbox/docker/c1'],
    ['another container', '/srv/sysbox/docker/c2'],
    ['another kind', '/srv/sysbox/kubelet/c1'],
    ['a climb out', '/srv/sysbox/docker/c1/../../../etc'],
    ['a host dir', '/etc'],
  ])('refuses %s', (_, source) => {
    expect(() => checks.volumeMounts('c1', 'docker', [bind('/srv/sysbox/docker/c1'), bind(source)])).toThrow(
      expect.objectContaining({
        code: 'internal',
        message: `container c1: the docker volume's mount source ${source} is not /srv/sysbox/docker/c1: refused`,
      }),
    );
  });
});

describe('subid ranges from subid-allocator', () => {
  it('accepts a range inside one delegated range', async () => {
    await expect(checks.subids('c1', { uid: 165536, gid: 165536, size: 65536 })).resolves.toBeUndefined();
    await expect(checks.subids('c1', { uid: 231072, gid: 165536, size: 65536 })).resolves.toBeUndefined();
  });

  it.each([
    ['uid root', { uid: 0, gid: 165536, size: 65536 }, /uid 0\.\.65535 is refused.*subuid/],
    ['uids past the end', { uid: 231073, gid: 165536, size: 65536 }, /uid 231073\.\.296608 is refused/],
    [
      'gids past the end',
      { uid: 165536, gid: 231072, size: 65536 },
      /gid 231072\.\.296607 is refused.*subgid/,
    ],
    ['a range across two delegations', { uid: 165536, gid: 165536, size: 1_000_000 }, /uid 165536\.\./],
  ])('refuses %s', async (_, reply, message) => {
    await expect(checks.subids('c1', reply)).rejects.toMatchObject({
      code: 'internal',
      message: expect.stringMatching(message),
    });
  });

  it('refuses everything when the subid files cannot be read', async () => {
    const none = createReplyChecks(
      { dataRoot: '/', subuidFile: join(dir, 'missing'), subgidFile: join(dir, 'missing') },
      silentLogger(),
    );
    await expect(none.subids('c1', { uid: 165536, gid: 165536, size: 65536 })).rejects.toMatchObject({
      code: 'internal',
    });
  });
});
