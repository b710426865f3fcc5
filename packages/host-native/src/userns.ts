/**
 * A user namespace to ID-map with, without forking the Node process: util-linux `unshare --user
 * --map-root-user` runs `sleep` in a new user namespace (uid and gid 0 mapped to 0, size 1, as
 * upstream's probe maps it), and the namespace is held by an fd on /proc/<pid>/ns/user.
 */
import { closeSync, openSync, readFileSync, readlinkSync } from 'node:fs';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { startProcess } from '@sysbox-mgr-ts/exec';

export interface UserNamespace {
  /** An O_RDONLY fd on the namespace (what mount_setattr's userns_fd takes). */
  fd: number;
  /** The holder process (sleep), killed by close(). */
  pid: number;
  close(): Promise<void>;
}

function readOr(path: string, read: (p: string) => string): string {
  try {
    return read(path);
  } catch {
    return '';
  }
}

/**
 * Spawns the holder and waits (polling /proc every millisecond) until it is in its own user
 * namespace with uid and gid maps written; throws `unsupported` when unshare is missing or fails,
 * `timeout` after timeoutMs.
 */
export async function spawnUserNamespace(timeoutMs = 2000): Promise<UserNamespace> {
  // sleep's bound outlives any probe, and ends the holder even if this process is SIGKILLed.
  const proc = startProcess('unshare', ['--user', '--map-root-user', '--', 'sleep', '60'], { output: 'pipe' });
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    await proc;
  };
  const pid = proc.pid;
  if (pid === undefined) {
    await proc;
    throw new SysboxError('unsupported', 'cannot create a user namespace: unshare (util-linux) is not installed');
  }
  const own = readlinkSync('/proc/self/ns/user');
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) {
      await proc;
      throw new SysboxError('unsupported', `cannot create a user namespace: unshare --user --map-root-user exited ${proc.exitCode}: ${stderr.trim()}`);
    }
    const ns = readOr(`/proc/${pid}/ns/user`, readlinkSync);
    if (ns && ns !== own && readOr(`/proc/${pid}/uid_map`, (p) => readFileSync(p, 'utf8')).trim() && readOr(`/proc/${pid}/gid_map`, (p) => readFileSync(p, 'utf8')).trim()) {
      let fd: number;
      try {
        fd = openSync(`/proc/${pid}/ns/user`, 'r');
      } catch (err) {
        await kill();
        throw new SysboxError('internal', `cannot open /proc/${pid}/ns/user: ${(err as Error).message}`, { cause: err });
      }
      return {
        fd,
        pid,
        async close() {
          closeSync(fd);
          await kill();
        },
      };
    }
    if (performance.now() > deadline) {
      await kill();
      throw new SysboxError('timeout', `unshare --user --map-root-user did not set up a user namespace within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}
