import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BOOT_ID_FILE, bootOf, readBootId } from './boot.js';

describe('boot id (issue #25)', () => {
  it("reads this kernel's boot id", () => {
    expect(readBootId()).toMatch(/^[0-9a-f-]{36}$/);
    expect(readBootId(BOOT_ID_FILE)).toBe(readBootId());
  });

  it('reads an injected file, and refuses what is not a boot id', () => {
    const dir = mkdtempSync(join(tmpdir(), 'boot-id-'));
    const file = join(dir, 'boot_id');
    writeFileSync(file, '0b0e3a4c-6c1d-4b7e-9f5e-1d2c3b4a5f60\n');
    expect(readBootId(file)).toBe('0b0e3a4c-6c1d-4b7e-9f5e-1d2c3b4a5f60');
    writeFileSync(file, 'not a uuid\n');
    expect(() => readBootId(file)).toThrow(/does not hold a boot id/);
    expect(() => readBootId(join(dir, 'missing'))).toThrow(/cannot read the boot id/);
  });

  it.each([
    { stamp: 'b1', current: 'b1', want: 'this-boot' },
    { stamp: 'b0', current: 'b1', want: 'earlier-boot' },
    { stamp: undefined, current: 'b1', want: 'unstamped' },
  ] as const)('a record stamped $stamp, booted $current: $want', ({ stamp, current, want }) => {
    expect(bootOf(stamp, current)).toBe(want);
  });
});
