import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHostGuard } from './guard.js';
import { dockerdDataRoots, readRuntimeRoots, RUNTIME_DEFAULT_ROOTS } from './runtime-roots.js';

// Issue #24: Docker's data-root moved in daemon.json made ReqMounts refuse every rootfs.
describe("the runtimes' roots, read from their real config files", () => {
  let base: string;
  const f = (rel: string) => join(base, rel);
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'host-guard-runtime-'));
    await mkdir(f('etc'), { recursive: true });
  });
  afterAll(() => rm(base, { recursive: true, force: true }));

  it('reads each runtime its own way, and counts defaults where a file is missing or declares nothing', async () => {
    await writeFile(f('etc/daemon.json'), JSON.stringify({ 'data-root': '/data/docker/', debug: true }));
    await writeFile(
      f('etc/config.toml'),
      'version = 2\nroot = "/srv/containerd"\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "x"\n',
    );
    await writeFile(
      f('etc/storage.conf'),
      '[storage]\ndriver = "overlay"\nrunroot = "/run/cs"\ngraphroot = "/srv/cs"\n',
    );
    await writeFile(f('etc/k3s.yaml'), 'write-kubeconfig-mode: "0644"\ndata-dir: /srv/k3s\n');
    const { roots, notes } = await readRuntimeRoots({
      dockerConfig: f('etc/daemon.json'),
      containerdConfig: f('etc/config.toml'),
      containersStorageConfig: f('etc/storage.conf'),
      k3sConfig: f('etc/k3s.yaml'),
      rke2Config: f('etc/missing.yaml'),
    });
    expect(notes).toEqual([]);
    expect(roots).toEqual([
      { path: '/data/docker', source: `data-root in ${f('etc/daemon.json')}` },
      { path: '/srv/containerd', source: `root in ${f('etc/config.toml')}` },
      { path: '/run/containerd', source: `containerd's default (state not set in ${f('etc/config.toml')})` },
      { path: '/srv/cs', source: `storage.graphroot in ${f('etc/storage.conf')}` },
      { path: '/run/cs', source: `storage.runroot in ${f('etc/storage.conf')}` },
      { path: '/srv/k3s', source: `data-dir in ${f('etc/k3s.yaml')}` },
      {
        path: RUNTIME_DEFAULT_ROOTS.rke2[0],
        source: `rke2's default (data-dir not set in ${f('etc/missing.yaml')})`,
      },
    ]);
  });

  it('notes a file it cannot parse and never counts / or a relative path', async () => {
    await writeFile(f('etc/bad.json'), '{ "data-root": ');
    await writeFile(f('etc/slash.toml'), 'root = "/"\nstate = "run/containerd"\n');
    const { roots, notes } = await readRuntimeRoots({
      dockerConfig: f('etc/bad.json'),
      containerdConfig: f('etc/slash.toml'),
    });
    expect(roots.map((r) => r.path)).toEqual(['/var/lib/docker', '/var/lib/containerd', '/run/containerd']);
    expect(notes).toEqual([expect.stringContaining(`${f('etc/bad.json')} not parsed`)]);
  });

  it("finds a running dockerd's --data-root in /proc, in both spellings", async () => {
    const proc = f('proc');
    const cmd = async (pid: string, argv: string[]) => {
      await mkdir(join(proc, pid), { recursive: true });
      await writeFile(join(proc, pid, 'cmdline'), argv.join('\0') + '\0');
    };
    await cmd('1', ['/sbin/init']);
    await cmd('42', ['/usr/bin/dockerd', '-H', 'fd://', '--data-root', '/mnt/d1']);
    await cmd('43', ['dockerd', '--data-root=/mnt/d2']);
    await cmd('44', ['/usr/bin/containerd', '--data-root', '/nope']);
    await mkdir(join(proc, 'self'));
    expect(await dockerdDataRoots(proc)).toEqual([
      { path: '/mnt/d1', source: '--data-root of the running dockerd (pid 42)' },
      { path: '/mnt/d2', source: '--data-root of the running dockerd (pid 43)' },
    ]);
    // and this host's real /proc reads without failing (no dockerd here need not mean none anywhere)
    await expect(dockerdDataRoots('/proc')).resolves.toBeInstanceOf(Array);
  });

  describe('createHostGuard', () => {
    const guardFor = (dockerConfig: string) =>
      createHostGuard({
        dataRoot: f('data'),
        allowedRootfsRoots: [],
        dockerConfig,
        containerdConfig: f('etc/none.toml'),
        subuidFile: f('etc/subuid'),
        subgidFile: f('etc/subgid'),
      });

    it('accepts a rootfs below a data-root moved in daemon.json, with no flag', async () => {
      const moved = f('disk2/docker');
      await mkdir(join(moved, 'overlay2/abc/merged'), { recursive: true });
      await writeFile(f('etc/moved.json'), JSON.stringify({ 'data-root': moved }));
      const merged = join(moved, 'overlay2/abc/merged');
      await expect(guardFor(f('etc/moved.json')).allowedRootfs(merged, 'rootfs of c1')).resolves.toBe(merged);
    });

    it('refuses a rootfs outside every declared root, naming each root, its source and the flag', async () => {
      const outside = f('elsewhere/rootfs');
      await mkdir(outside, { recursive: true });
      const err = await guardFor(f('etc/moved.json'))
        .allowedRootfs(outside, 'rootfs of c1')
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'invalid-request' });
      const message = (err as Error).message;
      expect(message).toContain(
        `rootfs of c1 ${outside} is refused: it does not lie below an allowed rootfs root`,
      );
      expect(message).toContain(`${f('disk2/docker')} (data-root in ${f('etc/moved.json')})`);
      expect(message).toContain(
        `/var/lib/containerd (containerd's default (root not set in ${f('etc/none.toml')}))`,
      );
      expect(message).toContain(`${f('data')} (the data root)`);
      expect(message).toContain('--allowed-rootfs-roots');
    });

    it('reads daemon.json again before refusing, so a data-root moved while running counts at once', async () => {
      const later = f('disk3/docker');
      await mkdir(join(later, 'rootfs'), { recursive: true });
      await writeFile(f('etc/later.json'), '{}');
      const guard = guardFor(f('etc/later.json'));
      expect((await guard.rootsInForce()).roots.map((r) => r.path)).not.toContain(later);
      await writeFile(f('etc/later.json'), JSON.stringify({ 'data-root': later }));
      await expect(guard.allowedRootfs(join(later, 'rootfs'), 'rootfs')).resolves.toBe(join(later, 'rootfs'));
      expect((await guard.rootsInForce()).roots.map((r) => r.path)).toContain(later);
    });

    it('adds --allowed-rootfs-roots to what the files declare', async () => {
      const extra = f('extra');
      await mkdir(join(extra, 'rootfs'), { recursive: true });
      const guard = createHostGuard({
        dataRoot: f('data'),
        allowedRootfsRoots: [extra],
        dockerConfig: f('etc/moved.json'),
        subuidFile: f('etc/subuid'),
        subgidFile: f('etc/subgid'),
      });
      await expect(guard.allowedRootfs(join(extra, 'rootfs'), 'rootfs')).resolves.toBe(join(extra, 'rootfs'));
      expect((await guard.rootsInForce()).roots).toContainEqual({
        path: extra,
        source: '--allowed-rootfs-roots',
      });
    });
  });
});
