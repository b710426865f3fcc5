/** What systemd units and operators' scripts written for upstream's sysbox-mgr rely on. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { SERVICE_APPS, binOf, repoRoot, startSystem, type System } from './harness.js';

describe('daemon command lines and signals', () => {
  let sys: System;
  beforeAll(async () => {
    sys = await startSystem({ apps: ['subid-allocator', 'vol-mgr', 'shiftfs-mgr', 'rootfs-cloner'] });
  });
  afterAll(async () => {
    await sys?.stop();
  });

  it('every daemon answers --version and -v with its name and package version', async () => {
    for (const app of [...SERVICE_APPS, 'gateway'] as const) {
      const version = JSON.parse(readFileSync(join(repoRoot, 'apps', app, 'package.json'), 'utf8'))
        .version as string;
      const bin = binOf(app);
      for (const flag of ['--version', '-v']) {
        const r = await run(bin.path, [flag], { timeout: 20_000 });
        expect(r.stdout.trim()).toBe(`${bin.name} version ${version}`);
      }
    }
  });

  it.each(['SIGHUP', 'SIGQUIT'] as const)(
    '%s stops a daemon gracefully with exit 0, as upstream',
    async (signal) => {
      const p = await sys.start('vol-mgr');
      p.proc.kill(signal);
      const r = await p.proc;
      expect(r.exitCode).toBe(0);
      expect(readFileSync(p.logFile, 'utf8')).toMatch(
        new RegExp(`"signal":"${signal}".*"msg":"stopping"[\\s\\S]*"msg":"stopped"`),
      );
    },
  );
});
