import { parseConfig } from '@sysbox-mgr-ts/service-kit';
import { describe, expect, it } from 'vitest';
import { hostGuardOptions } from './options.js';

const configOf = (argv: string[], env: Record<string, string> = {}) => {
  const r = parseConfig(hostGuardOptions, argv, env);
  if (!('config' in r)) throw new Error('help');
  return r.config;
};

describe('hostGuardOptions', () => {
  it("defaults to no extra root, the runtimes' own config files and the host subid files", () => {
    expect(configOf([])).toEqual({
      allowedRootfsRoots: [],
      dockerConfig: '/etc/docker/daemon.json',
      containerdConfig: '/etc/containerd/config.toml',
      containersStorageConfig: '/etc/containers/storage.conf',
      k3sConfig: '/etc/rancher/k3s/config.yaml',
      rke2Config: '/etc/rancher/rke2/config.yaml',
      procDir: '/proc',
      subuidFile: '/etc/subuid',
      subgidFile: '/etc/subgid',
    });
    expect(configOf(['--docker-config', '/t/daemon.json']).dockerConfig).toBe('/t/daemon.json');
  });

  it('takes comma-separated roots from a flag or the environment', () => {
    expect(configOf(['--allowed-rootfs-roots', '/a, /b/c']).allowedRootfsRoots).toEqual(['/a', '/b/c']);
    expect(
      configOf([], { SYSBOX_ALLOWED_ROOTFS_ROOTS: '/x', SYSBOX_SUBUID_FILE: '/t/subuid' }),
    ).toMatchObject({ allowedRootfsRoots: ['/x'], subuidFile: '/t/subuid' });
  });

  it('refuses relative or unnormalized roots', () => {
    expect(() => configOf(['--allowed-rootfs-roots', 'var/lib/docker'])).toThrow(/allowed-rootfs-roots/);
    expect(() => configOf(['--allowed-rootfs-roots', '/var/../etc'])).toThrow(/allowed-rootfs-roots/);
  });
});
