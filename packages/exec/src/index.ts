/**
 * The one place that runs child processes (through execa). startProcess hands its child back
 * synchronously (callers read its pid and attach to its streams at once), so this entry loads execa
 * when imported; code that only runs commands to completion imports `@sysbox-mgr-ts/exec/run`,
 * which loads execa on the first command.
 */
import { execa, type ResultPromise } from 'execa';

export * from './run.js';

export interface DaemonOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Where the child's stdout and stderr go: a file path, or 'pipe' to read them. */
  output?: 'pipe' | 'inherit' | { file: string };
  /**
   * Its own process group: a Ctrl-C on the terminal then reaches only the parent, which can
   * stop its children in order (daemons before the nats-server they drain to).
   */
  ownProcessGroup?: boolean;
}

/** A long-running child (nats-server, a daemon under test): the caller owns its lifetime. */
export function startProcess(file: string, args: readonly string[], opts: DaemonOptions = {}): ResultPromise {
  const output = opts.output ?? 'pipe';
  const stdio = typeof output === 'string' ? output : { file: output.file, append: true };
  return execa(file, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: true,
    stdin: 'ignore',
    stdout: stdio as 'pipe',
    stderr: stdio as 'pipe',
    reject: false,
    buffer: false,
    cleanup: true,
    detached: opts.ownProcessGroup ?? false,
  });
}
