/**
 * Starts a real nats-server (Debian package `nats-server`) for tests, benchmarks and the embedded
 * default: JetStream on, a free port on 127.0.0.1, a temp store unless one is given.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startProcess } from '@sysbox-mgr-ts/exec';

export interface NatsServerOptions {
  jetstream?: boolean;
  /** 0 (default) picks a free port. */
  port?: number;
  host?: string;
  /** JetStream store dir; a temp dir (removed on stop) when left out. */
  storeDir?: string;
  /** Path of the nats-server binary. */
  binary?: string;
  /** Extra server arguments. */
  args?: string[];
  /** Keep the server out of the caller's process group (see DaemonOptions.ownProcessGroup). */
  ownProcessGroup?: boolean;
  startTimeoutMs?: number;
}

export interface NatsServer {
  url: string;
  port: number;
  storeDir: string | undefined;
  pid: number;
  /** Everything the server logged so far. */
  logs(): string;
  /** Stops the server; removes a temp store. */
  stop(): Promise<void>;
  /** Kills and starts the server again on the same port and store (JetStream state survives). */
  restart(): Promise<void>;
}

const LISTENING = /Listening for client connections on [^\s]*:(\d+)/;
const READY = /Server is ready/;

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  const host = opts.host ?? '127.0.0.1';
  const jetstream = opts.jetstream ?? true;
  const tempStore = jetstream && !opts.storeDir ? await mkdtemp(join(tmpdir(), 'nats-js-')) : undefined;
  const storeDir = opts.storeDir ?? tempStore;
  let port = opts.port ?? 0;
  let log = '';
  let child: ReturnType<typeof startProcess> | undefined;

  const launch = async (): Promise<void> => {
    const args = ['-a', host, '-p', port === 0 ? '-1' : String(port)];
    if (jetstream) args.push('-js', '-sd', storeDir!);
    args.push(...(opts.args ?? []));
    const proc = startProcess(opts.binary ?? 'nats-server', args, { output: 'pipe', ownProcessGroup: opts.ownProcessGroup });
    child = proc;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nats-server did not start within ${opts.startTimeoutMs ?? 10_000} ms:\n${log}`)),
        opts.startTimeoutMs ?? 10_000,
      );
      const onData = (chunk: Buffer): void => {
        log += chunk.toString();
        const m = LISTENING.exec(log);
        if (m && READY.test(log)) {
          port = Number(m[1]);
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stderr?.on('data', onData);
      proc.stdout?.on('data', onData);
      void proc.then((r) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited (${r.exitCode ?? r.signal}) before it was ready:\n${log}${r.shortMessage ?? ''}`));
      });
    });
  };

  const kill = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null) return;
    proc.kill('SIGTERM');
    const exited = await Promise.race([proc.then(() => true), delay(5000).then(() => false)]);
    if (!exited) {
      proc.kill('SIGKILL');
      await proc;
    }
  };

  await launch();
  return {
    get url() {
      return `nats://${host}:${port}`;
    },
    get port() {
      return port;
    },
    storeDir,
    get pid() {
      return child?.pid ?? -1;
    },
    logs: () => log,
    stop: async () => {
      await kill();
      if (tempStore) await rm(tempStore, { recursive: true, force: true });
    },
    restart: async () => {
      await kill();
      log = '';
      await launch();
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
