/** Socket activation's environment, and the bound path of a socket taken by fd. */
import { mkdtemp, rm } from 'node:fs/promises';
import { Socket, connect, createServer } from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import { createLogger, silentLogger } from '@sysbox-mgr-ts/service-kit';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hpack } from './authority-rewrite.js';
import { boundPathOf, listenFdFromSystemd, startSocketFront } from './socket-front.js';
import { http2Frame } from '../test/test-support.js';

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
  it('closes a connection whose framing is broken before handing it on, with a warning in the log', async () => {
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
      // Reads (and drops) the front's SETTINGS, so that the end after it is seen.
      client.resume();
      // The preface, then a CONTINUATION that continues nothing.
      client.write(
        Buffer.concat([
          Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
          Buffer.from([0, 0, 1, 0x9, 0x4, 0, 0, 0, 1, 0x82]),
        ]),
      );
      await closed;
      expect(handed).toHaveLength(0);
      expect(lines.find((l) => l.level === 40)?.msg).toMatch(
        /closing a connection on the gRPC socket: CONTINUATION/,
      );
    } finally {
      await front.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('hands a connection with an accepted authority over as the socket itself, less the ACK of its own SETTINGS', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'front-'));
    const handed: Duplex[] = [];
    const front = await startSocketFront({
      socketPath: join(dir, 's.sock'),
      listenFd: undefined,
      inject: (c) => void handed.push(c),
      log: silentLogger(),
    });
    const request = (authority: string) => {
      const enc = hpack.compressor.create({ table: { maxSize: 4096 } });
      enc.write([
        { name: ':method', value: 'POST' },
        { name: ':path', value: '/x' },
        { name: ':authority', value: authority },
      ]);
      return http2Frame(0x1, 0x4, 1, enc.read()!);
    };
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    const settings = http2Frame(0x4, 0, 0, Buffer.alloc(0));
    const ack = http2Frame(0x4, 0x1, 0, Buffer.alloc(0));
    try {
      for (const [authority, asSocket] of [
        ['localhost', true],
        ['/run/sysbox/sysmgr.sock', false],
      ] as const) {
        const client = connect(join(dir, 's.sock'));
        // The front speaks first: an empty SETTINGS frame, what a client waits for.
        const first = await new Promise<Buffer>((r) => client.once('data', r));
        expect(first).toEqual(settings);
        const headers = request(authority);
        client.write(Buffer.concat([preface, settings, ack, headers]));
        for (let i = 0; i < 200 && handed.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
        const c = handed.pop()!;
        expect(c instanceof Socket).toBe(asSocket);
        // What grpc-js reads: the client's bytes without the ACK of the front's SETTINGS.
        const chunks: Buffer[] = [];
        c.on('data', (b: Buffer) => chunks.push(b));
        c.resume();
        for (let i = 0; i < 200 && Buffer.concat(chunks).length < preface.length + 9; i++)
          await new Promise((r) => setTimeout(r, 10));
        const got = Buffer.concat(chunks);
        expect(got.subarray(0, preface.length + 9)).toEqual(Buffer.concat([preface, settings]));
        if (asSocket) expect(got).toEqual(Buffer.concat([preface, settings, headers]));
        client.destroy();
        c.destroy();
      }
    } finally {
      await front.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
