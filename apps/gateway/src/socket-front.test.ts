/** Socket activation's environment, and the bound path of a socket taken by fd. */
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import { createLogger } from '@sysbox-mgr-ts/service-kit';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { boundPathOf, listenFdFromSystemd, startSocketFront } from './socket-front.js';

describe('listenFdFromSystemd', () => {
  it('takes fd 3 only when LISTEN_PID names this process, and clears the variables for children', () => {
    const env: NodeJS.ProcessEnv = {
      LISTEN_FDS: '1',
      LISTEN_PID: '4242',
      LISTEN_FDNAMES: 'sysbox-gateway.socket',
    };
    expect(listenFdFromSystemd(env, 4242)).toBe(3);
    expect(env).toEqual({});
    // Inherited from a parent that was socket-activated itself: not ours.
    expect(listenFdFromSystemd({ LISTEN_FDS: '1', LISTEN_PID: '4241' }, 4242)).toBeUndefined();
    expect(listenFdFromSystemd({ LISTEN_FDS: '0', LISTEN_PID: '4242' }, 4242)).toBeUndefined();
    expect(listenFdFromSystemd({}, 4242)).toBeUndefined();
  });

  it('picks the fd named for the gateway among several', () => {
    const env = { LISTEN_FDS: '2', LISTEN_PID: '7', LISTEN_FDNAMES: 'other:sysbox-gateway.socket' };
    expect(listenFdFromSystemd(env, 7)).toBe(4);
    expect(listenFdFromSystemd({ LISTEN_FDS: '2', LISTEN_PID: '7' }, 7)).toBe(3);
  });
});

describe('boundPathOf', () => {
  it("reads a listening unix socket's path from /proc/net/unix by its inode", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'front-'));
    const path = join(dir, 's.sock');
    const server = createServer();
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      expect(await boundPathOf(fd)).toBe(path);
      expect(await boundPathOf(0)).toBeNull();
    } finally {
      server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('startSocketFront', () => {
  it('hands each connection on, and closes one whose framing is broken with a warning in the log', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'front-'));
    const lines: { level: number; msg: string }[] = [];
    const log = createLogger({
      service: 't',
      node: 't',
      version: '0',
      level: 'debug',
      destination: new Writable({
        write: (c: Buffer, _e, cb) => {
          lines.push(JSON.parse(c.toString()) as { level: number; msg: string });
          cb();
        },
      }),
    });
    const handed: Duplex[] = [];
    const front = await startSocketFront({
      socketPath: join(dir, 's.sock'),
      listenFd: undefined,
      inject: (c) => {
        handed.push(c);
        c.resume();
      },
      log,
    });
    try {
      const client = connect(join(dir, 's.sock'));
      const closed = new Promise<void>((r) => client.on('close', () => r()));
      client.on('error', () => undefined);
      // The preface, then a CONTINUATION that continues nothing.
      client.write(
        Buffer.concat([
          Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
          Buffer.from([0, 0, 1, 0x9, 0x4, 0, 0, 0, 1, 0x82]),
        ]),
      );
      await closed;
      expect(handed).toHaveLength(1);
      expect(handed[0]!.destroyed).toBe(true);
      expect(lines.find((l) => l.level === 40)?.msg).toMatch(
        /closing a connection on the gRPC socket: CONTINUATION/,
      );
    } finally {
      await front.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
