/**
 * The kernel's page size (what `getconf PAGESIZE` prints), read from /proc rather than asked of a
 * command: the cloner then runs none while it starts, and an idle cloner never loads execa.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { SysboxError } from '@sysbox-mgr-ts/contracts';

/** KernelPageSize of this process's first mapping: its executable, on plain pages (never hugetlbfs). */
export function kernelPageSize(smapsPath = '/proc/self/smaps'): number {
  const fd = openSync(smapsPath, 'r');
  const head = Buffer.alloc(4096);
  let read: number;
  try {
    // A read of /proc/<pid>/smaps returns whole mappings, so the first one's fields are all here.
    read = readSync(fd, head);
  } finally {
    closeSync(fd);
  }
  const m = /^KernelPageSize:\s+(\d+) kB$/m.exec(head.toString('latin1', 0, read));
  if (!m) throw new SysboxError('internal', `no KernelPageSize in ${smapsPath}`);
  return Number(m[1]) * 1024;
}
