/**
 * sd_notify(3): a daemon under systemd (Type=notify) tells the manager READY=1 and STOPPING=1 by
 * one datagram each on the unix socket named in NOTIFY_SOCKET. Node cannot send on a unix
 * datagram socket, so the addon does it. listenDatagram is the manager's end, for tests.
 */
import { loadAddon } from './addon.js';

/**
 * Sends message to $NOTIFY_SOCKET (a path, or '@name' for an abstract socket). Returns false when
 * the variable is unset (not under a notify-aware supervisor); throws when sending fails.
 */
export function sdNotify(message: string, env: Record<string, string | undefined> = process.env): boolean {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return false;
  loadAddon().notify(socket, message);
  return true;
}

/** Sends one datagram to a unix datagram socket. */
export function notify(socketPath: string, message: string): void {
  loadAddon().notify(socketPath, message);
}

export interface Datagram {
  message: string;
  /** The sender's pid (SCM_CREDENTIALS), as systemd's NotifyAccess=main checks it. */
  pid: number;
}

export interface DatagramListener {
  path: string;
  /** The next datagram; rejects after timeoutMs. */
  next(timeoutMs?: number): Promise<Datagram>;
  /** Every datagram queued now, without waiting. */
  drain(): Datagram[];
  close(): void;
}

/** Binds a unix datagram socket at path ('@name': abstract), polled every few milliseconds. */
export function listenDatagram(path: string): DatagramListener {
  const addon = loadAddon();
  const fd = addon.bindDatagram(path);
  let closed = false;
  const take = (): Datagram | undefined => {
    const got = addon.receive(fd);
    return got ? { message: got[0], pid: got[1] } : undefined;
  };
  return {
    path,
    async next(timeoutMs = 10_000) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        if (closed) throw new Error(`listener on ${path} is closed`);
        const d = take();
        if (d) return d;
        if (performance.now() > deadline) throw new Error(`no datagram on ${path} within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    drain() {
      const out: Datagram[] = [];
      for (let d = take(); d; d = take()) out.push(d);
      return out;
    },
    close() {
      if (closed) return;
      closed = true;
      addon.close(fd);
    },
  };
}
