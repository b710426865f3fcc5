/** The guard's daemon options, defined once for every daemon that takes them. */
import { HostPath } from '@sysbox-mgr-ts/contracts';
import { option } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';
import { DEFAULT_ROOTFS_ROOTS } from './rootfs-roots.js';

const CommaPaths = z
  .string()
  .default(DEFAULT_ROOTFS_ROOTS.join(','))
  .transform((s) =>
    s
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean),
  )
  .pipe(z.array(HostPath).min(1, 'name at least one root'));

export const subidFileOptions = {
  subuidFile: option({
    flag: 'subuid-file',
    env: 'SYSBOX_SUBUID_FILE',
    description: 'subordinate uid file: ids given to containers must lie in its ranges',
    schema: HostPath.default('/etc/subuid'),
  }),
  subgidFile: option({
    flag: 'subgid-file',
    env: 'SYSBOX_SUBGID_FILE',
    description: 'subordinate gid file: ids given to containers must lie in its ranges',
    schema: HostPath.default('/etc/subgid'),
  }),
};

export const hostGuardOptions = {
  allowedRootfsRoots: option({
    flag: 'allowed-rootfs-roots',
    env: 'SYSBOX_ALLOWED_ROOTFS_ROOTS',
    description: 'comma-separated dirs container rootfs must lie below (the data root is always added)',
    schema: CommaPaths,
  }),
  ...subidFileOptions,
};
