/** The guard's daemon options, defined once for every daemon that takes them. */
import { HostPath } from '@sysbox-mgr-ts/contracts';
import { option } from '@sysbox-mgr-ts/service-kit';
import { z } from 'zod';

const CommaPaths = z
  .string()
  .default('')
  .transform((s) =>
    s
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean),
  )
  .pipe(z.array(HostPath));

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

/** The container runtimes' config files the allowed rootfs roots are read from. */
export const runtimeConfigOptions = {
  dockerConfig: option({
    flag: 'docker-config',
    env: 'SYSBOX_DOCKER_CONFIG',
    description: "Docker's daemon.json: its data-root is an allowed rootfs root",
    schema: HostPath.default('/etc/docker/daemon.json'),
  }),
  containerdConfig: option({
    flag: 'containerd-config',
    env: 'SYSBOX_CONTAINERD_CONFIG',
    description: "containerd's config.toml: its root and state are allowed rootfs roots",
    schema: HostPath.default('/etc/containerd/config.toml'),
  }),
  containersStorageConfig: option({
    flag: 'containers-storage-config',
    env: 'SYSBOX_CONTAINERS_STORAGE_CONFIG',
    description: "containers-storage's storage.conf (podman, CRI-O): its graphroot and runroot are allowed",
    schema: HostPath.default('/etc/containers/storage.conf'),
  }),
  k3sConfig: option({
    flag: 'k3s-config',
    env: 'SYSBOX_K3S_CONFIG',
    description: "k3s's config.yaml: its data-dir is an allowed rootfs root",
    schema: HostPath.default('/etc/rancher/k3s/config.yaml'),
  }),
  rke2Config: option({
    flag: 'rke2-config',
    env: 'SYSBOX_RKE2_CONFIG',
    description: "rke2's config.yaml: its data-dir is an allowed rootfs root",
    schema: HostPath.default('/etc/rancher/rke2/config.yaml'),
  }),
  procDir: {
    ...option({
      flag: 'proc-dir',
      env: 'SYSBOX_PROC_DIR',
      description: "where a running dockerd's --data-root is looked for",
      schema: HostPath.default('/proc'),
    }),
    hidden: true,
  },
};

export const hostGuardOptions = {
  allowedRootfsRoots: option({
    flag: 'allowed-rootfs-roots',
    env: 'SYSBOX_ALLOWED_ROOTFS_ROOTS',
    description:
      "comma-separated dirs container rootfs may lie below, beyond the runtimes' stores read from their config files (the data root is always added)",
    schema: CommaPaths,
  }),
  ...runtimeConfigOptions,
  ...subidFileOptions,
};
