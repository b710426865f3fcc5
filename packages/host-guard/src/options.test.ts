import { parseConfig } from '@sysbox-mgr-ts/service-kit';
import { describe, expect, it } from 'vitest';
import { hostGuardOptions } from './options.js';
import { DEFAULT_ROOTFS_ROOTS } from './rootfs-roots.js';

const configOf = (argv: string[], env: Record<string, string> = {}) => {
  const r = parseConfig(hostGuardOptions, argv, env);
  if (!('config' in r)) throw new Error('help');
  return r.config;
};

describe('hostGuardOptions', () => {
  it("defaults to the runtimes' stores and the host subid files", () => {
    expect(configOf([])).toEqual({
      allowedRootfsRoots: [...DEFAULT_ROOTFS_ROOTS],
      subuidFile: '/etc/subuid',
      subgidFile: '/etc/subgid',
    });
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
