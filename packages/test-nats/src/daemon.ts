/**
 * An app's `src/main.ts` as a process of its own against a test nats-server, as a host runs it:
 * node itself (no npx or tsx wrapper process, so a SIGKILL hits the daemon and nothing is
 * orphaned), the workspace's sources through tsx. Resolves once the daemon logged "started".
 */
import { startProcess } from '@sysbox-mgr-ts/exec';
import type { IdentityName } from '@sysbox-mgr-ts/contracts';
import type { NatsServer } from './index.js';

export interface AppDaemonOptions {
  /** The app's directory: its `src/main.ts` runs, with this as the working directory. */
  appDir: string;
  ns: NatsServer;
  /** Whose credentials the daemon connects with. */
  identity: IdentityName;
  /** Flags after `--nats-url` and `--nats-creds`. */
  args: readonly string[];
  /** How long it may take to log "started" (default 30 s). */
  startTimeoutMs?: number;
}

export interface AppDaemon {
  proc: ReturnType<typeof startProcess>;
  pid: number;
  /** Everything it printed so far. */
  logs(): string;
  /** SIGTERM, then waits until it exited. */
  stop(): Promise<void>;
}

export async function startAppDaemon(opts: AppDaemonOptions): Promise<AppDaemon> {
  const proc = startProcess(
    process.execPath,
    [
      '--import',
      'tsx',
      '--conditions=@sysbox-mgr-ts/source',
      'src/main.ts',
      '--nats-url',
      opts.ns.url,
      '--nats-creds',
      opts.ns.credentials(opts.identity),
      ...opts.args,
    ],
    { cwd: opts.appDir, output: 'pipe' },
  );
  let out = '';
  const started = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`daemon did not start:\n${out}`)),
      opts.startTimeoutMs ?? 30_000,
    );
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      if (out.includes('"msg":"started"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    void proc.then(() => {
      clearTimeout(timer);
      reject(new Error(`daemon exited before it started:\n${out}`));
    });
  });
  try {
    await started;
  } catch (err) {
    proc.kill('SIGKILL');
    await proc.catch(() => undefined);
    throw err;
  }
  return {
    proc,
    pid: proc.pid!,
    logs: () => out,
    stop: async () => {
      proc.kill('SIGTERM');
      await proc.catch(() => undefined);
    },
  };
}
