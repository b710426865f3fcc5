/**
 * ReqFsState as a decision: a container whose distro expects the kernel headers elsewhere than the
 * host keeps them gets a dir and a softlink to the host's (upstream's kernel-header softlink).
 */
import { posix } from 'node:path';
import { linuxHeaderPath, type HostFacts } from '../probes.js';

/** runc configs.FsEntry: kind 2 = dir, 3 = softlink. */
export interface FsEntry {
  kind: number;
  path: string;
  mode: number;
  dst: string;
}

const FS_DIR = 2;
const FS_SOFTLINK = 3;

/** `distro`: the container rootfs's (undefined when it names none). */
export function fsStatePlan(
  facts: Pick<HostFacts, 'linuxHeaderMounts' | 'hostDistro' | 'kernelRelease' | 'hostKernelHdrPath'>,
  distro: string | undefined,
): FsEntry[] {
  if (facts.linuxHeaderMounts.length === 0) return [];
  if (distro === undefined || distro === facts.hostDistro) return [];
  const cntrPath = linuxHeaderPath(distro, facts.kernelRelease);
  if (cntrPath === facts.hostKernelHdrPath) return [];
  return [
    { kind: FS_DIR, path: posix.dirname(cntrPath), mode: 0o755, dst: '' },
    { kind: FS_SOFTLINK, path: cntrPath, mode: 0o644, dst: facts.hostKernelHdrPath },
  ];
}
