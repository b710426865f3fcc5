import { describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { isInstalled, run } from './index.js';

describe('run', () => {
  it('passes arguments as an array, untouched by any shell', async () => {
    const r = await run('printf', ['%s|', 'a b', '$(echo x)', ';rm -rf /'], { timeout: 5000 });
    expect(r.stdout).toBe('a b|$(echo x)|;rm -rf /|');
  });
  it('maps a failing exit to internal with stderr in the message', async () => {
    const err = await run('ls', ['/definitely/not/here'], { timeout: 5000 }).catch((e) => e);
    expect(err).toBeInstanceOf(SysboxError);
    expect(err.code).toBe('internal');
    expect(err.message).toMatch(/No such file/);
    expect(err.cause).toBeDefined();
  });
  it('maps a time-out to timeout and kills the child', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'exec-timeout-'));
    const pidFile = join(dir, 'pid');
    // The child writes its pid, then becomes the sleep (exec keeps the pid).
    const err = await run('sh', ['-c', 'echo $$ > "$0"; exec sleep 10', pidFile], { timeout: 200 }).catch(
      (e) => e,
    );
    expect(err.code).toBe('timeout');
    const pid = Number(await readFile(pidFile, 'utf8'));
    expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    await rm(dir, { recursive: true, force: true });
  });
  it('maps cancellation to timeout', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const err = await run('sleep', ['10'], { timeout: 10_000, signal: ac.signal }).catch((e) => e);
    expect(err.code).toBe('timeout');
    expect(err.message).toMatch(/cancelled/);
  });
  it('maps a missing program to unsupported', async () => {
    const err = await run('no-such-program-xyz', [], { timeout: 5000 }).catch((e) => e);
    expect(err.code).toBe('unsupported');
    expect(await isInstalled('no-such-program-xyz')).toBe(false);
    expect(await isInstalled('ls')).toBe(true);
  });
  it('ties a child to this process on request, arguments untouched', async () => {
    const r = await run('printf', ['%s|', 'a b', '--'], { timeout: 5000, dieWithParent: true });
    expect(r.stdout).toBe('a b|--|');
    const status = await run('grep', ['^PPid', '/proc/self/status'], { timeout: 5000, dieWithParent: true });
    expect(status.stdout).toBe(`PPid:\t${process.pid}`);
  });
  it('accepts extra success exit codes', async () => {
    const r = await run('sh', ['-c', 'exit 24'], { timeout: 5000, okExitCodes: [24] });
    expect(r.exitCode).toBe(24);
  });
});
