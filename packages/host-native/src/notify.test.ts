import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listenDatagram, notify, sdNotify } from './notify.js';

describe('sd_notify over a unix datagram socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hn-notify-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('delivers to a socket path, with the sender pid', async () => {
    const l = listenDatagram(join(dir, 'notify.sock'));
    try {
      expect(sdNotify('READY=1', { NOTIFY_SOCKET: l.path })).toBe(true);
      notify(l.path, 'STATUS=two words\nSTOPPING=1');
      expect(await l.next(1000)).toEqual({ message: 'READY=1', pid: process.pid });
      expect(await l.next(1000)).toEqual({ message: 'STATUS=two words\nSTOPPING=1', pid: process.pid });
      expect(l.drain()).toEqual([]);
    } finally {
      l.close();
    }
  });

  it('delivers to an abstract socket (@name)', async () => {
    const name = `@sysbox-hn-test-${process.pid}-${Date.now()}`;
    const l = listenDatagram(name);
    try {
      sdNotify('READY=1', { NOTIFY_SOCKET: name });
      expect((await l.next(1000)).message).toBe('READY=1');
    } finally {
      l.close();
    }
  });

  it('does nothing without NOTIFY_SOCKET, and throws a typed error when nobody listens', async () => {
    expect(sdNotify('READY=1', {})).toBe(false);
    expect(() => notify(join(dir, 'nobody.sock'), 'READY=1')).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'sendto' }),
    );
    expect(() => notify('relative.sock', 'READY=1')).toThrow(TypeError);
    const l = listenDatagram(join(dir, 'slow.sock'));
    l.close();
    await expect(l.next(10)).rejects.toThrow(/closed/);
  });

  it('times out when nothing arrives', async () => {
    const l = listenDatagram(join(dir, 'quiet.sock'));
    try {
      await expect(l.next(30)).rejects.toThrow(/no datagram .* within 30 ms/);
    } finally {
      l.close();
    }
  });
});
