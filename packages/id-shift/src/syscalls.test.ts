import { chmodSync, linkSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';
import { linuxSyscalls, shiftAclXattr } from './syscalls.js';

const isRoot = process.getuid?.() === 0;
const canAcl = isRoot && statSync('/usr/bin/setfacl', { throwIfNoEntry: false }) !== undefined;
const ENOENT = 2;
const ENODATA = 61;

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
    const out = shiftAclXattr(value, 1000, 2000) as Buffer;
    expect(Buffer.isBuffer(out)).toBe(true);
    expect(out.readUInt32LE(4 + 8 + 4)).toBe(2234);
    expect(out.readUInt32LE(4 + 24 + 4)).toBe(2055);
    expect(out.readUInt32LE(4 + 4)).toBe(UNDEFINED_ID);
    expect(out.readUInt32LE(4 + 40 + 4)).toBe(UNDEFINED_ID);
    expect(value.readUInt32LE(4 + 8 + 4)).toBe(1234);
    expect(shiftAclXattr(out, -1000, -2000)).toEqual(value);
  });

  it('names the entry whose shifted id leaves 0..2^32-2, and rejects malformed values', () => {
    expect(shiftAclXattr(value, -1234, 0)).toBeInstanceOf(Buffer);
    expect(shiftAclXattr(value, -1235, 0)).toBe('ACL entry user:1234');
    expect(shiftAclXattr(value, 0, 2 ** 32 - 2 - 55 + 1)).toBe('ACL entry group:55');
    expect(shiftAclXattr(value.subarray(0, 10), 1, 1)).toMatch(/malformed/);
    expect(shiftAclXattr(aclValue([]).fill(1, 0, 4), 1, 1)).toMatch(/malformed/);
  });
});

describe.skipIf(!isRoot)('linuxSyscalls (real files, as root)', () => {
  const sys = linuxSyscalls(koffi);
  let dir: string;
  let dirFd: number;

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
    dirFd = sys.openDir(cstr(dir));
  });
  afterAll(() => {
    sys.close(dirFd);
    rmSync(dir, { recursive: true, force: true });
  });

  it('decodes struct statx like lstat, without following symlinks', () => {
    expect(dirFd).toBeGreaterThan(0);
    for (const name of ['file', 'sym', 'sub', '.']) {
      const want = lstatSync(join(dir, name), { bigint: true });
      expect(sys.statx(dirFd, cstr(name))).toBe(0);
      const { uid, gid, mode, nlink, devMajor, devMinor } = sys.stat;
      expect({ uid, gid, mode, nlink }, name).toEqual({
        uid: Number(want.uid),
        gid: Number(want.gid),
        mode: Number(want.mode),
        nlink: Number(want.nlink),
      });
      expect(sys.stat.ino()).toBe(want.ino.toString());
      // glibc's makedev, as Node reports st_dev.
      const dev = (BigInt(devMajor & 0xfff) << 8n) | (BigInt(devMajor & ~0xfff) << 32n) | BigInt(devMinor & 0xff) | (BigInt(devMinor & ~0xff) << 12n);
      expect(dev).toBe(want.dev);
    }
    expect(sys.stat.mode & 0o170000).toBe(0o040000);
    expect(sys.statx(dirFd, cstr('missing'))).toBe(-ENOENT);
  });

  it('lists a directory with getdents64, names as bytes', () => {
    const buf = Buffer.alloc(4096);
    const names: string[] = [];
    for (let n = sys.getdents(dirFd, buf); n > 0; n = sys.getdents(dirFd, buf)) {
      for (let at = 0; at < n; at += buf.readUInt16LE(at + 16)) {
        names.push(buf.toString('latin1', at + 19, buf.indexOf(0, at + 19)));
      }
    }
    expect(names.sort()).toEqual(['.', '..', 'caf\xe9', 'file', 'link', 'sub', 'sym']);
    expect(sys.openDir(cstr(join(dir, 'sym')))).toBeLessThan(0);
    expect(sys.openDir(cstr(join(dir, 'missing')))).toBe(-ENOENT);
  });

  it('chowns a symlink itself and restores setuid bits with fchmodat', () => {
    expect(sys.fchownat(dirFd, cstr('sym'), 7, 8)).toBe(0);
    expect(lstatSync(join(dir, 'sym'))).toMatchObject({ uid: 7, gid: 8 });
    expect(lstatSync(join(dir, 'file'))).toMatchObject({ uid: 1234, gid: 5678 });
    expect(sys.fchownat(dirFd, cstr('file'), 100, 200)).toBe(0);
    expect(lstatSync(join(dir, 'link'))).toMatchObject({ uid: 100, gid: 200 });
    expect(lstatSync(join(dir, 'file')).mode & 0o7777).toBe(0o751);
    expect(sys.fchmodat(dirFd, cstr('file'), 0o4751)).toBe(0);
    expect(lstatSync(join(dir, 'file')).mode & 0o7777).toBe(0o4751);
    expect(sys.fchownat(dirFd, cstr('missing'), 1, 1)).toBe(-ENOENT);
  });

  it.skipIf(!canAcl)('reads, shifts and writes a POSIX ACL xattr that getfacl then shows', async () => {
    const path = join(dir, 'sub');
    await run('setfacl', ['-m', 'u:1234:rw,g:55:r', '-d', '-m', 'u:777:rwx', path], { timeout: 10_000 });
    const list = Buffer.alloc(4096);
    const listed = sys.listxattrat(dirFd, cstr('sub'), list);
    const viaPath = sys.llistxattr(cstr(path), list);
    expect(listed === viaPath || listed === -38).toBe(true);
    expect(list.toString('latin1', 0, viaPath).split('\0')).toEqual(expect.arrayContaining(['system.posix_acl_access', 'system.posix_acl_default']));

    const value = Buffer.alloc(4096);
    const n = sys.lgetxattr(cstr(path), 'system.posix_acl_access', value);
    expect(n).toBeGreaterThan(4);
    const shifted = shiftAclXattr(value.subarray(0, n), 100_000, 200_000);
    expect(Buffer.isBuffer(shifted)).toBe(true);
    expect(sys.lsetxattr(cstr(path), 'system.posix_acl_access', shifted as Buffer)).toBe(0);
    const acl = (await run('getfacl', ['--numeric', '--omit-header', path], { timeout: 10_000 })).stdout;
    expect(acl).toContain('user:101234:rw-');
    expect(acl).toContain('group:200055:r--');
    expect(acl).toContain('default:user:777:rwx');
    expect(sys.lgetxattr(cstr(join(dir, 'file')), 'system.posix_acl_access', value)).toBe(-ENODATA);
  });
});
