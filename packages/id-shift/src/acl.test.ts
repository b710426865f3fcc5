import { describe, expect, it } from 'vitest';
import { decodeAclPath, findAclOverflow, formatRestore, parseGetfaclDump, shiftAclRecord } from './acl.js';

const dump = `# file: /t/d
# owner: 0
# group: 0
user::rwx
group::r-x
other::r-x
default:user::rwx
default:user:777:rwx
default:group:88:r-x
default:mask::rwx
default:other::r-x

# file: /t/d/odd\\012name\\\\x
# owner: 5
# group: 5
# flags: s--
user::rw-
user:1234:rw-
group::r--
group:55:r--
mask::rw-
other::r--
`;

describe('getfacl dump handling', () => {
  it('parses records, decodes escaped paths and keeps the flags line', () => {
    const recs = parseGetfaclDump(dump);
    expect(recs.map((r) => r.path)).toEqual(['/t/d', '/t/d/odd\nname\\x']);
    expect(recs[1]!.rawPath).toBe('/t/d/odd\\012name\\\\x');
    expect(recs[1]!.flags).toBe('# flags: s--');
    expect(recs[0]!.entries).toHaveLength(8);
  });

  it('shifts only qualified user and group entries, access and default', () => {
    const [dir, file] = parseGetfaclDump(dump).map((r) => shiftAclRecord(r, 1000, 2000));
    expect(dir!.entries).toContain('default:user:1777:rwx');
    expect(dir!.entries).toContain('default:group:2088:r-x');
    expect(dir!.entries).toContain('user::rwx');
    expect(file!.entries).toEqual(['user::rw-', 'user:2234:rw-', 'group::r--', 'group:2055:r--', 'mask::rw-', 'other::r--']);
  });

  it('finds a qualifier that would leave 0..2^32-2', () => {
    const recs = parseGetfaclDump(dump);
    expect(findAclOverflow(recs, -777, 0)).toBeUndefined();
    expect(findAclOverflow(recs, -778, 0)).toContain('/t/d (ACL entry default:user:777:rwx)');
    expect(findAclOverflow(recs, 0, 2 ** 32 - 2 - 55 + 1)).toContain('group:');
  });

  it('formats a restore input without owner lines, with raw paths and flags', () => {
    const text = formatRestore(parseGetfaclDump(dump).slice(1));
    expect(text).toBe('# file: /t/d/odd\\012name\\\\x\n# flags: s--\nuser::rw-\nuser:1234:rw-\ngroup::r--\ngroup:55:r--\nmask::rw-\nother::r--\n');
    expect(text).not.toContain('# owner');
  });

  it('decodes utf-8 names that getfacl left as they are', () => {
    expect(decodeAclPath('/t/caf\u00e9 \\040x')).toBe('/t/caf\u00e9  x');
  });
});
