import {
  chmodSync,
  linkSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { ALL_IDS, loadNativeWalker, META_FIELDS, shiftAclXattr } from './syscalls.js';

const isRoot = process.getuid?.() === 0;
const canAcl = isRoot && statSync('/usr/bin/setfacl', { throwIfNoEntry: false }) !== undefined;

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);

/** An ACL xattr value: version 2, then [tag, perm, id] entries. */
function aclValue(entries: [number, number, number][]): Buffer {
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id, 8 + 8 * i);
  });
  return b;
}

describe('shiftAclXattr', () => {
  const UNDEFINED_ID = 0xffffffff;
  const value = aclValue([
    [0x01, 6, UNDEFINED_ID],
    [0x02, 6, 1234],
    [0x04, 4, UNDEFINED_ID],
    [0x08, 4, 55],
    [0x10, 6, UNDEFINED_ID],
    [0x20, 4, UNDEFINED_ID],
  ]);

  it('shifts only ACL_USER and ACL_GROUP ids and leaves the input alone', () => {
    const out = shiftAclXattr(value, 1000, 2000, ALL_IDS) as Buffer;
    expect(Buffer.isBuffer(out)).toBe(true);
    expect(out.readUInt32LE(4 + 8 + 4)).toBe(2234);
    expect(out.readUInt32LE(4 + 24 + 4)).toBe(2055);
    expect(out.readUInt32LE(4 + 4)).toBe(UNDEFINED_ID);
    expect(out.readUInt32LE(4 + 40 + 4)).toBe(UNDEFINED_ID);
    expect(value.readUInt32LE(4 + 8 + 4)).toBe(1234);
    expect(shiftAclXattr(out, -1000, -2000, ALL_IDS)).toEqual(value);
  });

  it('names the entry whose shifted id leaves 0..2^32-2, and rejects malformed values', () => {
    expect(shiftAclXattr(value, -1234, 0, ALL_IDS)).toBeInstanceOf(Buffer);
    expect(shiftAclXattr(value, -1235, 0, ALL_IDS)).toBe('ACL entry user:1234');
    expect(shiftAclXattr(value, 0, 2 ** 32 - 2 - 55 + 1, ALL_IDS)).toBe('ACL entry group:55');
    expect(shiftAclXattr(value.subarray(0, 10), 1, 1, ALL_IDS)).toMatch(/malformed/);
    expect(shiftAclXattr(aclValue([]).fill(1, 0, 4), 1, 1, ALL_IDS)).toMatch(/malformed/);
  });

  it('with ranges, shifts only the ids inside them and checks only those for overflow', () => {
    const onlyUser = shiftAclXattr(value, 1000, 2000, { uid: [1000, 2000], gid: [0, 0] }) as Buffer;
    expect(onlyUser.readUInt32LE(4 + 8 + 4)).toBe(2234);
    expect(onlyUser.readUInt32LE(4 + 24 + 4)).toBe(55);
    expect(shiftAclXattr(value, 1000, 2000, { uid: [0, 1234], gid: [56, 100] })).toEqual(value);
    expect(shiftAclXattr(value, -1235, 0, { uid: [0, 1000], gid: [0, 100] })).toEqual(value);
  });
});

describe.skipIf(!isRoot)('native walker addon (real files, as root)', () => {
  const native = loadNativeWalker();
  let dir: string;
  let dev: { major: number; minor: number };

  /** Entries scanned in dir by name: [uid, gid, mode, nlink, ino]. */
  function scanned(
    acls = false,
  ): Map<string, { uid: number; gid: number; mode: number; nlink: number; ino: bigint }> {
    const [count, meta, names, , failure] = native.scanDir(
      cstr(dir),
      null,
      dev.major,
      dev.minor,
      false,
      acls,
    );
    expect(failure).toBeNull();
    const out = new Map();
    for (let i = 0, m = 0; i < count; i++, m += META_FIELDS) {
      const name = names.toString('latin1', meta[m]!, meta[m]! + meta[m + 1]!);
      out.set(name, {
        uid: meta[m + 2],
        gid: meta[m + 3],
        mode: meta[m + 4],
        nlink: meta[m + 5],
        ino: (BigInt(meta[m + 7]!) << 32n) | BigInt(meta[m + 6]!),
      });
    }
    return out;
  }

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'id-shift-sys-'));
    writeFileSync(join(dir, 'file'), 'x');
    lchownSync(join(dir, 'file'), 1234, 5678);
    chmodSync(join(dir, 'file'), 0o4751);
    linkSync(join(dir, 'file'), join(dir, 'link'));
    symlinkSync(join(dir, 'file'), join(dir, 'sym'));
    lchownSync(join(dir, 'sym'), 42, 43);
    mkdirSync(join(dir, 'sub'));
    // A name that is not UTF-8 (latin1 é): it must survive as bytes.
    writeFileSync(Buffer.from(join(dir, 'caf\xe9'), 'latin1'), '');
    const d = BigInt(statSync(dir, { bigint: true }).dev);
    // glibc's major()/minor(), as Node packs st_dev.
    dev = {
      major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)),
      minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)),
    };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('scans a directory like lstat, names as bytes, without following symlinks', () => {
    const entries = scanned();
    expect([...entries.keys()].sort()).toEqual(['caf\xe9', 'file', 'link', 'sub', 'sym']);
    for (const name of ['file', 'sym', 'sub']) {
      const want = lstatSync(join(dir, name), { bigint: true });
      expect(entries.get(name), name).toEqual({
        uid: Number(want.uid),
        gid: Number(want.gid),
        mode: Number(want.mode),
        nlink: Number(want.nlink),
        ino: want.ino,
      });
    }
    const [count, , names] = native.scanDir(cstr(dir), cstr('sub'), dev.major, dev.minor, false, false);
    expect([count, names.toString()]).toEqual([1, 'sub\0']);
    // Vanished or symlinked directories are empty, not failures; other devices are skipped.
    expect(native.scanDir(cstr(join(dir, 'missing')), null, dev.major, dev.minor, false, false)[0]).toBe(0);
    expect(native.scanDir(cstr(join(dir, 'sym')), null, dev.major, dev.minor, false, false)[0]).toBe(0);
    expect(native.scanDir(cstr(dir), null, dev.major + 1, dev.minor, false, false)[0]).toBe(0);
    expect(native.scanDir(cstr(dir), null, dev.major + 1, dev.minor, true, false)[0]).toBe(5);
  });

  it('chowns a directory range by an offset, symlinks themselves, and restores setuid bits', () => {
    const names = Buffer.from('sym\0file\0missing\0');
    const starts = Uint32Array.of(0, 4, 9);
    const modes = Uint32Array.of(0o120777, 0o104751, 0o100644);
    expect(
      native.applyDir(
        cstr(dir),
        names,
        starts,
        Uint32Array.of(42, 1234, 1),
        Uint32Array.of(43, 5678, 1),
        modes,
        0,
        3,
        100,
        -40,
        null,
      ),
    ).toBeNull();
    expect(lstatSync(join(dir, 'sym'))).toMatchObject({ uid: 142, gid: 3 });
    expect(lstatSync(join(dir, 'link'))).toMatchObject({ uid: 1334, gid: 5638 });
    expect(lstatSync(join(dir, 'file')).mode & 0o7777).toBe(0o4751);
    // Absolute paths with no directory: the hard-link list.
    const abs = Buffer.from(`${join(dir, 'file')}\0`);
    expect(
      native.applyDir(
        null,
        abs,
        Uint32Array.of(0),
        Uint32Array.of(1234),
        Uint32Array.of(5678),
        Uint32Array.of(0o104751),
        0,
        1,
        0,
        0,
        null,
      ),
    ).toBeNull();
    expect(lstatSync(join(dir, 'file'))).toMatchObject({ uid: 1234, gid: 5678, mode: 0o104751 });
    expect(
      native.applyDir(cstr(join(dir, 'file')), names, starts, starts, starts, modes, 0, 1, 0, 0, null),
    ).toBeNull();
  });

  it.skipIf(!canAcl)(
    'reads raw ACL values in the scan and writes shifted ones that getfacl then shows',
    async () => {
      const path = join(dir, 'sub');
      await run('setfacl', ['-m', 'u:1234:rw,g:55:r', '-d', '-m', 'u:777:rwx', path], { timeout: 10_000 });
      const [count, meta, names, acls, failure] = native.scanDir(
        cstr(dir),
        null,
        dev.major,
        dev.minor,
        false,
        true,
      );
      expect(failure).toBeNull();
      expect(acls).toHaveLength(1);
      const [index, access, dflt] = acls![0]!;
      expect(names.toString('latin1', meta[index * META_FIELDS]!, meta[index * META_FIELDS]! + 3)).toBe(
        'sub',
      );
      expect(count).toBe(5);
      expect(dflt).not.toBeNull();
      const shifted = shiftAclXattr(access!, 100_000, 200_000, ALL_IDS) as Buffer;
      expect(Buffer.isBuffer(shifted)).toBe(true);
      const result = native.applyDir(
        cstr(dir),
        Buffer.from('sub\0'),
        Uint32Array.of(0),
        Uint32Array.of(0),
        Uint32Array.of(0),
        Uint32Array.of(0o40755),
        0,
        1,
        0,
        0,
        [[0, shifted, null]],
      );
      expect(result).toBeNull();
      const acl = (await run('getfacl', ['--numeric', '--omit-header', path], { timeout: 10_000 })).stdout;
      expect(acl).toContain('user:101234:rw-');
      expect(acl).toContain('group:200055:r--');
      expect(acl).toContain('default:user:777:rwx');
    },
  );

  it('reports failures with the call, errno and entry', () => {
    const long = Buffer.from(`${'x'.repeat(300)}\0`);
    const [, , , , failure] = native.scanDir(cstr(dir), long, dev.major, dev.minor, false, false);
    expect(failure?.[0]).toBe('statx');
    expect(failure?.[1]).toBe(36); // ENAMETOOLONG
    expect(failure?.[2].toString()).toBe('x'.repeat(300));
    expect(
      native.applyDir(
        cstr(dir),
        long,
        Uint32Array.of(0),
        Uint32Array.of(0),
        Uint32Array.of(0),
        Uint32Array.of(0),
        0,
        1,
        0,
        0,
        null,
      ),
    ).toEqual(['fchownat', 36, 0]);
  });
});
