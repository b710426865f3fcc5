/**
 * The few Linux syscalls a walker needs, called directly through koffi (libc), and the codec of
 * the kernel's binary POSIX ACL xattr. Node's lstatSync/lchownSync cost 3-5 µs each here (path
 * validation, a Stats object, a full path lookup); a koffi call relative to an open directory fd
 * costs about the syscall.
 *
 * Both factories are eval'd into the walker threads (`(${linuxSyscalls})`), so each must stay
 * self-contained: no imports, no module-scope names. Paths and names are bytes (Buffers ending in
 * a NUL), so names that are not UTF-8 survive unchanged. Every call returns a negative errno on
 * failure instead of throwing: the walkers branch on ENOENT/ENODATA/EOPNOTSUPP all the time.
 */
import type koffiModule from 'koffi';

type Koffi = typeof koffiModule;

export interface Syscalls {
  /** open(path, O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC): fd or -errno. */
  openDir(path: Uint8Array): number;
  close(fd: number): void;
  /** getdents64: bytes read into buf (0 at the end) or -errno. */
  getdents(fd: number, buf: Buffer): number;
  /**
   * statx(dirFd, name, AT_SYMLINK_NOFOLLOW|AT_STATX_DONT_SYNC, STATX_BASIC_STATS): 0 or -errno.
   * On success `stat` holds the result until the next call.
   */
  statx(dirFd: number, name: Uint8Array): number;
  readonly stat: StatxResult;
  fchownat(dirFd: number, name: Uint8Array, uid: number, gid: number): number;
  fchmodat(dirFd: number, name: Uint8Array, mode: number): number;
  /** listxattrat (Linux 6.13+; -ENOSYS before), not following a final symlink: bytes or -errno. */
  listxattrat(dirFd: number, name: Uint8Array, buf: Buffer): number;
  llistxattr(path: Uint8Array, buf: Buffer): number;
  lgetxattr(path: Uint8Array, attr: string, buf: Buffer): number;
  lsetxattr(path: Uint8Array, attr: string, value: Uint8Array): number;
}

/** The fields of a struct statx the walkers use; one object, overwritten by every statx call. */
export interface StatxResult {
  uid: number;
  gid: number;
  mode: number;
  nlink: number;
  devMajor: number;
  devMinor: number;
  /** Decimal: inode numbers are 64 bits; read only for multiply-linked files. */
  ino(): string;
}

export function linuxSyscalls(koffi: Koffi): Syscalls {
  const libc = koffi.load('libc.so.6');
  const O_DIR_NOFOLLOW_CLOEXEC = 0o200000 | 0o400000 | 0o2000000; // | O_RDONLY (0)
  const AT_SYMLINK_NOFOLLOW = 0x100;
  const AT_STATX_DONT_SYNC = 0x4000;
  const STATX_BASIC_STATS = 0x7ff;
  // listxattrat has the same number on every architecture but alpha (syscalls added since 5.1).
  const SYS_LISTXATTRAT = 465;
  const ENOSYS = 38;

  const open = libc.func('open', 'int', ['void *', 'int', 'int']);
  const close = libc.func('close', 'int', ['int']);
  const getdents64 = libc.func('getdents64', 'long', ['int', 'void *', 'size_t']);
  const statx = libc.func('statx', 'int', ['int', 'void *', 'int', 'uint32', 'void *']);
  const fchownat = libc.func('fchownat', 'int', ['int', 'void *', 'uint32', 'uint32', 'int']);
  const fchmodat = libc.func('fchmodat', 'int', ['int', 'void *', 'uint32', 'int']);
  const syscall6 = libc.func('syscall', 'long', ['long', 'int', 'void *', 'uint32', 'void *', 'size_t']);
  const llistxattr = libc.func('llistxattr', 'long', ['void *', 'void *', 'size_t']);
  const lgetxattr = libc.func('lgetxattr', 'long', ['void *', 'str', 'void *', 'size_t']);
  const lsetxattr = libc.func('lsetxattr', 'int', ['void *', 'str', 'void *', 'size_t', 'int']);

  // struct statx (uapi/linux/stat.h): the same layout on every architecture, 256 bytes.
  const statxBuf = Buffer.alloc(256);
  const stat: StatxResult = {
    uid: 0,
    gid: 0,
    mode: 0,
    nlink: 0,
    devMajor: 0,
    devMinor: 0,
    ino: () => statxBuf.readBigUInt64LE(32).toString(),
  };

  const result = (r: number | bigint): number => (r < 0 ? -koffi.errno() : Number(r));
  let listxattratMissing = false;

  return {
    openDir: (path) => result(open(path, O_DIR_NOFOLLOW_CLOEXEC, 0)),
    close: (fd) => void close(fd),
    getdents: (fd, buf) => result(getdents64(fd, buf, buf.length)),
    stat,
    statx(dirFd, name) {
      const r = statx(dirFd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, statxBuf);
      if (r < 0) return -koffi.errno();
      stat.nlink = statxBuf.readUInt32LE(16);
      stat.uid = statxBuf.readUInt32LE(20);
      stat.gid = statxBuf.readUInt32LE(24);
      stat.mode = statxBuf.readUInt16LE(28);
      stat.devMajor = statxBuf.readUInt32LE(136);
      stat.devMinor = statxBuf.readUInt32LE(140);
      return 0;
    },
    fchownat: (dirFd, name, uid, gid) => result(fchownat(dirFd, name, uid, gid, AT_SYMLINK_NOFOLLOW)),
    fchmodat: (dirFd, name, mode) => result(fchmodat(dirFd, name, mode, 0)),
    listxattrat(dirFd, name, buf) {
      if (listxattratMissing) return -ENOSYS;
      const r = result(syscall6(SYS_LISTXATTRAT, dirFd, name, AT_SYMLINK_NOFOLLOW, buf, buf.length));
      if (r === -ENOSYS) listxattratMissing = true;
      return r;
    },
    llistxattr: (path, buf) => result(llistxattr(path, buf, buf.length)),
    lgetxattr: (path, attr, buf) => result(lgetxattr(path, attr, buf, buf.length)),
    lsetxattr: (path, attr, value) => result(lsetxattr(path, attr, value, value.length, 0)),
  };
}

/**
 * Shifts the ids of ACL_USER and ACL_GROUP entries in a system.posix_acl_* xattr value (little-endian
 * u32 version 2, then 8-byte entries: u16 tag, u16 perm, u32 id). Returns the shifted copy, or a
 * description of the first entry whose shifted id would leave 0..2^32-2, or of a malformed value.
 */
export function shiftAclXattr(value: Uint8Array, uidOffset: number, gidOffset: number): Buffer | string {
  const POSIX_ACL_XATTR_VERSION = 2;
  const ACL_USER = 0x02;
  const ACL_GROUP = 0x08;
  const MAX_ID = 2 ** 32 - 2;
  const src = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (src.length < 4 || (src.length - 4) % 8 !== 0 || src.readUInt32LE(0) !== POSIX_ACL_XATTR_VERSION) {
    return `malformed ACL xattr (${src.length} bytes)`;
  }
  const out = Buffer.from(src);
  for (let at = 4; at < out.length; at += 8) {
    const tag = out.readUInt16LE(at);
    if (tag !== ACL_USER && tag !== ACL_GROUP) continue;
    const id = out.readUInt32LE(at + 4);
    const shifted = id + (tag === ACL_USER ? uidOffset : gidOffset);
    if (shifted < 0 || shifted > MAX_ID) return `ACL entry ${tag === ACL_USER ? 'user' : 'group'}:${id}`;
    out.writeUInt32LE(shifted, at + 4);
  }
  return out;
}
