/**
 * The gateway's unix socket: it listens itself (or takes the listening socket systemd hands it) and
 * gives each accepted connection to grpc-js through a connection injector, passing the client's
 * bytes through the authority rewrite (authority-rewrite.ts). Server-to-client bytes pass unchanged.
 */
import { readFile, readlink } from 'node:fs/promises';
import { Duplex } from 'node:stream';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import type { Logger } from '@sysbox-mgr-ts/service-kit';
import {
  createAuthorityRewriter,
  EMPTY_SETTINGS_FRAME,
  REPLACEMENT_AUTHORITY,
  type AuthorityRewriter,
} from './authority-rewrite.js';

/** The first fd systemd passes (sd_listen_fds(3)). */
const SD_LISTEN_FDS_START = 3;

/**
 * How long a new connection may take to show its first request's authority before it is handed
 * over fronted anyway (a client that connects ahead of its first call).
 */
const DECIDE_WITHIN_MS = 1000;

/**
 * The listening socket systemd handed this process (socket activation), or undefined: LISTEN_PID
 * must name this process and LISTEN_FDS count at least one fd. With several, the one named
 * `sysmgr` or `sysbox-gateway.socket` in LISTEN_FDNAMES, else the first. The variables are removed
 * so the children the gateway runs do not take them for theirs.
 */
export function listenFdFromSystemd(
  env: NodeJS.ProcessEnv = process.env,
  pid = process.pid,
): number | undefined {
  const fds = Number(env.LISTEN_FDS);
  const forUs = env.LISTEN_PID !== undefined && Number(env.LISTEN_PID) === pid;
  const names = env.LISTEN_FDNAMES?.split(':') ?? [];
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (!forUs || !Number.isInteger(fds) || fds < 1) return undefined;
  const named = names.findIndex((n) => n === 'sysmgr' || n === 'sysbox-gateway.socket');
  return SD_LISTEN_FDS_START + (named >= 0 && named < fds ? named : 0);
}

/**
 * One accepted connection as grpc-js sees it: the client's bytes after the authority rewrite, the
 * server's bytes written to the socket as they are. Back-pressure both ways: a full read side
 * pauses the socket, a full socket holds the writer until it drains.
 */
class FrontedConnection extends Duplex {
  constructor(
    private readonly socket: Socket,
    rewriter: AuthorityRewriter,
    /** Client bytes the rewriter already gave out while the connection was being decided. */
    decided: Buffer[],
    onRefused: (authority: string) => void,
    log: Logger,
  ) {
    super({ allowHalfOpen: true });
    for (const b of decided) this.push(b);
    socket.on('data', (chunk: Buffer) => {
      let out: Buffer[];
      try {
        out = rewriter.push(chunk);
      } catch (err) {
        log.warn({ err }, `closing a connection on the gRPC socket: ${(err as Error).message}`);
        this.destroy();
        return;
      }
      if (rewriter.refused !== undefined) onRefused(rewriter.refused);
      let more = true;
      for (const b of out) more = this.push(b);
      if (!more) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => {
      log.debug({ err }, 'a connection on the gRPC socket failed');
      this.destroy();
    });
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', () => cb());
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.socket.cork();
    let ok = true;
    for (const c of chunks) ok = this.socket.write(c.chunk);
    this.socket.uncork();
    if (ok) cb();
    else this.socket.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

/**
 * Decides a new connection before grpc-js sees it. The front sends an empty SETTINGS frame first,
 * the server preface every client waits for before its first request, and reads the client's bytes
 * up to that request's header block. An authority Node's http2 accepts (grpc-go >= 1.57, grpc-js,
 * grpc C core): the socket itself goes to grpc-js with those bytes put back (less the ACK of the
 * front's SETTINGS), and Node's http2 reads it natively from then on, at no cost per call. A
 * refused one (grpc-go < 1.57), or no request within DECIDE_WITHIN_MS: grpc-js gets the socket
 * through FrontedConnection, which rewrites every header block.
 */
function frontConnection(
  socket: Socket,
  inject: (connection: Duplex) => void,
  onRefused: (authority: string) => void,
  log: Logger,
): void {
  const rewriter = createAuthorityRewriter({ ownSettingsSent: true });
  const decided: Buffer[] = [];
  let handedOver = false;
  const handOver = (as: 'socket' | 'fronted'): void => {
    handedOver = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', onEarlyEnd);
    socket.off('end', onEarlyEnd);
    if (as === 'socket') {
      socket.pause();
      if (decided.length > 0) socket.unshift(Buffer.concat(decided));
      inject(socket);
    } else {
      inject(new FrontedConnection(socket, rewriter, decided, onRefused, log));
    }
  };
  const onData = (chunk: Buffer): void => {
    try {
      decided.push(...rewriter.push(chunk));
    } catch (err) {
      log.warn({ err }, `closing a connection on the gRPC socket: ${(err as Error).message}`);
      clearTimeout(timer);
      socket.destroy();
      return;
    }
    if (rewriter.mode === 'pass') handOver('socket');
    else if (rewriter.mode === 'rewrite') {
      onRefused(rewriter.refused!);
      handOver('fronted');
    }
  };
  const onEarlyEnd = (): void => {
    if (handedOver) return;
    clearTimeout(timer);
    socket.destroy();
  };
  const timer = setTimeout(() => handOver('fronted'), DECIDE_WITHIN_MS);
  socket.on('data', onData);
  socket.on('error', onEarlyEnd);
  socket.on('end', onEarlyEnd);
  socket.write(EMPTY_SETTINGS_FRAME);
}

/**
 * The path a unix socket fd is bound to, from /proc/net/unix by the socket's inode (Node's
 * server.address() is null for a socket taken by fd); undefined where that cannot be read.
 */
export async function boundPathOf(fd: number): Promise<string | null | undefined> {
  try {
    const link = await readlink(`/proc/self/fd/${fd}`);
    const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
    if (!inode) return null;
    for (const line of (await readFile('/proc/net/unix', 'utf8')).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[6] === inode) return f[7] ?? null;
    }
    return null;
  } catch {
    return undefined;
  }
}

export interface SocketFront {
  /** True when the listening socket came from systemd (and is left in place at stop). */
  inherited: boolean;
  /** Stops accepting at once; resolves once the connections grpc-js was given are closed too. */
  close(): Promise<void>;
}

/**
 * Listens on `socketPath` (the caller prepared the path), or on the fd systemd handed over, whose
 * address must be `socketPath`; each connection goes to `inject` fronted by the authority rewrite.
 */
export async function startSocketFront(opts: {
  socketPath: string;
  listenFd: number | undefined;
  inject: (connection: Duplex) => void;
  log: Logger;
}): Promise<SocketFront> {
  const { log } = opts;
  let told = false;
  const onRefused = (authority: string): void => {
    if (told) return;
    told = true;
    log.info(
      { authority: authority.slice(0, 256), replacement: REPLACEMENT_AUTHORITY },
      `a client sends :authority ${JSON.stringify(authority.slice(0, 256))}, which Node's http2 refuses ` +
        `(grpc-go before 1.57 sends the socket path); its connections are rewritten to ${REPLACEMENT_AUTHORITY}`,
    );
  };
  const server: NetServer = createServer({ allowHalfOpen: true }, (socket) =>
    frontConnection(socket, opts.inject, onRefused, log),
  );
  server.on('error', (err) => log.error({ err }, 'the gRPC socket failed'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenFd === undefined ? opts.socketPath : { fd: opts.listenFd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (opts.listenFd !== undefined) {
    const address = await boundPathOf(opts.listenFd);
    if (address !== undefined && address !== opts.socketPath) {
      server.close();
      throw new SysboxError(
        'failed-precondition',
        `the socket systemd handed over (fd ${opts.listenFd}) is ${address === null ? 'no unix socket bound to a path' : `bound to ${address}`}, not to --socket ${opts.socketPath}: ` +
          'make ListenStream= in sysbox-gateway.socket and --socket the same path',
      );
    }
  }
  return {
    inherited: opts.listenFd !== undefined,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
