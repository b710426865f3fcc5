/** Socket activation's environment, and the bound path of a socket taken by fd. */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { boundPathOf, listenFdFromSystemd } from './socket-front.js';

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
