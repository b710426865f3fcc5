/**
 * User namespaces without forking the Node process: util-linux `unshare` runs `sleep` in a new
 * user namespace, and the namespace is held by that process. Two shapes:
 *
 * - spawnUserNamespace: uid and gid 0 mapped to 0, size 1 (`--map-root-user`, as upstream's
 *   ID-mapped mount probe maps it), held by an fd on /proc/<pid>/ns/user for mount_setattr.
 * - spawnUserMountNamespace: a user namespace with a given id range and its own mount namespace,
 *   where commands run as its root through util-linux `nsenter` (upstream's shiftfs check forks a
 *   child into such a pair of namespaces; forking a multi-threaded Node process is unsafe).
 */
import { closeSync, openSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { run, startProcess, type RunResult } from '@sysbox-mgr-ts/exec';

export interface UserNamespace {
  /** An O_RDONLY fd on the namespace (what mount_setattr's userns_fd takes). */
  fd: number;
  /** The holder process (sleep), killed by close(). */
  pid: number;
  close(): Promise<void>;
}

/** Ids [inside, inside + size) of the namespace are host ids [outside, outside + size); for uids and gids alike. */
export interface IdRange {
  inside: number;
  outside: number;
  size: number;
}

export interface UserMountNamespace {
  /** The holder process (sleep), killed by close(). */
  pid: number;
  /**
   * Runs file as root of the namespace, in its mount namespace, in the holder's working directory
   * as the namespace sees it: relative paths resolve there, through mounts made in the namespace,
   * and need no search permission on the directories above it.
   */
  run(file: string, args: readonly string[]): Promise<RunResult>;
  close(): Promise<void>;
}

function readOr(path: string, read: (p: string) => string): string {
  try {
    return read(path);
  } catch {
    return '';
  }
}

const readText = (p: string) => readFileSync(p, 'utf8');
// sleep's bound outlives any probe, and ends the holder even if this process is SIGKILLed.
const HOLD = ['--', 'sleep', '60'];

/**
 * Spawns `unshare <flags> -- sleep 60` and polls /proc every millisecond until ready(pid) holds in
 * a user namespace other than ours; throws `unsupported` when unshare is missing or fails,
 * `timeout` after timeoutMs (the holder is killed then).
 */
async function spawnHolder(
  unshareFlags: readonly string[],
  cwd: string | undefined,
  ready: (pid: number) => boolean,
  timeoutMs: number,
): Promise<{ pid: number; kill(): Promise<void> }> {
  const proc = startProcess('unshare', [...unshareFlags, ...HOLD], { output: 'pipe', cwd });
  let stderr = '';
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    await proc;
  };
  const pid = proc.pid;
  const argv = `unshare ${unshareFlags.join(' ')}`;
  if (pid === undefined) {
    await proc;
    throw new SysboxError(
      'unsupported',
      'cannot create a user namespace: unshare (util-linux) is not installed',
    );
  }
  const own = readlinkSync('/proc/self/ns/user');
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) {
      await proc;
      throw new SysboxError(
        'unsupported',
        `cannot create a user namespace: ${argv} exited ${proc.exitCode}: ${stderr.trim()}`,
      );
    }
    const ns = readOr(`/proc/${pid}/ns/user`, readlinkSync);
    if (ns && ns !== own && ready(pid)) return { pid, kill };
    if (performance.now() > deadline) {
      await kill();
      throw new SysboxError('timeout', `${argv} did not set up a user namespace within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * The holder of a 0 → 0 (size 1) user namespace, once its uid and gid maps are written; throws
 * `unsupported` when unshare is missing or fails, `timeout` after timeoutMs.
 */
export async function spawnUserNamespace(timeoutMs = 2000): Promise<UserNamespace> {
  const mapped = (pid: number) =>
    readOr(`/proc/${pid}/uid_map`, readText).trim() !== '' &&
    readOr(`/proc/${pid}/gid_map`, readText).trim() !== '';
  const holder = await spawnHolder(['--user', '--map-root-user'], undefined, mapped, timeoutMs);
  let fd: number;
  try {
    fd = openSync(`/proc/${holder.pid}/ns/user`, 'r');
  } catch (err) {
    await holder.kill();
    throw new SysboxError('internal', `cannot open /proc/${holder.pid}/ns/user: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return {
    fd,
    pid: holder.pid,
    async close() {
      closeSync(fd);
      await holder.kill();
    },
  };
}

const NSENTER_TIMEOUT_MS = 10_000;

/**
 * A user namespace mapping `ids`, with its own (private) mount namespace, held by a process whose
 * working directory is cwd. This process writes the maps (root here may map any range, which
 * unshare's own options would do through newuidmap); mounts made inside never reach the host and
 * end with close(). Throws like spawnUserNamespace.
 */
export async function spawnUserMountNamespace(opts: {
  ids: IdRange;
  cwd: string;
  timeoutMs?: number;
}): Promise<UserMountNamespace> {
  // Wait for the exec of sleep: by then unshare has made the mount namespace private.
  const execed = (pid: number) => readOr(`/proc/${pid}/comm`, readText).trim() === 'sleep';
  const holder = await spawnHolder(
    ['--user', '--mount', '--propagation', 'private'],
    opts.cwd,
    execed,
    opts.timeoutMs ?? 2000,
  );
  const { inside, outside, size } = opts.ids;
  try {
    // One write each, as the kernel requires.
    for (const map of ['uid_map', 'gid_map'])
      writeFileSync(`/proc/${holder.pid}/${map}`, `${inside} ${outside} ${size}\n`);
  } catch (err) {
    await holder.kill();
    throw new SysboxError(
      'unsupported',
      `cannot map ids ${outside}-${outside + size - 1} into a user namespace: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return {
    pid: holder.pid,
    // nsenter's bare --wd takes the holder's working directory as the namespace sees it.
    run: (file, args) =>
      run('nsenter', ['--target', String(holder.pid), '--user', '--mount', '--wd', '--', file, ...args], {
        timeout: NSENTER_TIMEOUT_MS,
      }),
    close: () => holder.kill(),
  };
}
