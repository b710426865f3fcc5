/**
 * Commands run to completion (`@sysbox-mgr-ts/exec/run`, also re-exported by the package index):
 * arguments as arrays, a time bound and a cancel signal on every call, failures as typed
 * SysboxErrors with the cause kept.
 */
import type { ExecaError } from 'execa';
import { SysboxError, type ErrorCode } from '@sysbox-mgr-ts/contracts';

/**
 * execa and the ~150 modules it brings (2.3-2.5 MB of an idle daemon's RSS) load with the first
 * command, not with this module: a daemon that runs none while idle never loads them.
 */
let execaModule: Promise<typeof import('execa')> | undefined;
const loadExeca = () => (execaModule ??= import('execa'));

export interface DebugLogger {
  debug(obj: object, msg?: string): void;
}

export interface RunOptions {
  /** Milliseconds before the child is killed (SIGTERM, then SIGKILL). */
  timeout: number;
  signal?: AbortSignal;
  cwd?: string;
  input?: string;
  env?: Record<string, string>;
  logger?: DebugLogger;
  /** Exit codes that count as success besides 0 (rsync's 24: files vanished). */
  okExitCodes?: readonly number[];
  /**
   * The child gets SIGKILL when this process dies, even by SIGKILL (PR_SET_PDEATHSIG through
   * util-linux setpriv): a long copy must not outlive a killed daemon and race its restart.
   */
  dieWithParent?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export async function run(file: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  if (opts.dieWithParent) {
    return run('setpriv', ['--pdeathsig', 'KILL', '--', file, ...args], { ...opts, dieWithParent: false });
  }
  const started = performance.now();
  opts.logger?.debug({ argv: [file, ...args], cwd: opts.cwd }, 'exec');
  const { execa, ExecaError } = await loadExeca();
  try {
    const r = await execa(file, args, {
      timeout: opts.timeout,
      cancelSignal: opts.signal,
      forceKillAfterDelay: 2000,
      cwd: opts.cwd,
      input: opts.input,
      env: opts.env,
      extendEnv: true,
      stripFinalNewline: true,
      reject: false,
    });
    const exitCode = r.exitCode ?? -1;
    if (r.failed && !(opts.okExitCodes?.includes(exitCode) && !r.timedOut && !r.isCanceled)) {
      throw toSysboxError(file, args, opts.timeout, r as unknown as ExecaError);
    }
    opts.logger?.debug(
      { argv: [file, ...args], exitCode, ms: Math.round(performance.now() - started) },
      'exec done',
    );
    return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode };
  } catch (err) {
    if (err instanceof SysboxError) throw err;
    if (err instanceof ExecaError) throw toSysboxError(file, args, opts.timeout, err);
    throw SysboxError.from(err);
  }
}

function toSysboxError(file: string, args: readonly string[], timeout: number, err: ExecaError): SysboxError {
  const argv = [file, ...args].join(' ');
  let code: ErrorCode = 'internal';
  let why: string;
  if (err.timedOut) {
    code = 'timeout';
    why = `timed out after ${timeout} ms`;
  } else if (err.isCanceled) {
    code = 'timeout';
    why = 'cancelled';
  } else if ((err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT' || err.code === 'ENOENT') {
    code = 'unsupported';
    why = `${file} is not installed`;
  } else {
    const stderr = String(err.stderr ?? '')
      .trim()
      .split('\n')
      .slice(-3)
      .join(' | ');
    why = `exit ${err.exitCode ?? err.signal ?? '?'}${stderr ? `: ${stderr}` : ''}`;
  }
  return new SysboxError(code, `${argv.length > 300 ? `${argv.slice(0, 300)}…` : argv}: ${why}`, {
    cause: err,
  });
}

/** True when `file` can be run (it is on PATH or an executable path). */
export async function isInstalled(file: string): Promise<boolean> {
  const { execa } = await loadExeca();
  const r = await execa(file, ['--version'], { reject: false, timeout: 5000 });
  return !(r.failed && (r.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT');
}
