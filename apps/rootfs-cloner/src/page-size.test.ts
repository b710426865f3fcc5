import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kernelPageSize } from './page-size.js';

describe('kernelPageSize', () => {
  it('is what getconf PAGESIZE prints', () => {
    expect(kernelPageSize()).toBe(Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()));
  });
  it('refuses a file without KernelPageSize', () => {
    const dir = mkdtempSync(join(tmpdir(), 'page-size-'));
    try {
      writeFileSync(join(dir, 'smaps'), 'Size: 8 kB\n');
      expect(() => kernelPageSize(join(dir, 'smaps'))).toThrow(/no KernelPageSize/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
