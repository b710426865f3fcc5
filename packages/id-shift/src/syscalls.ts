/**
 * The native walker addon (native/id_shift.c: prebuilt in prebuilds/, or built by node-gyp into
 * build/Release/) and the codec of the kernel's binary POSIX ACL xattr. The addon does one
 * directory per call: a call through koffi cost 0.5-2 µs on top of each 1-2.5 µs syscall here, so
 * crossing once per directory instead of once per syscall is most of the speed.
 *
 * shiftAclXattr is eval'd into the walker threads (`(${shiftAclXattr})`), so it must stay
 * self-contained: no imports, no module-scope names. Paths and names are bytes (Buffers ending in a
 * NUL), so names that are not UTF-8 survive unchanged.
 */
import { createRequire } from 'node:module';
import { addonPath } from '@sysbox-mgr-ts/native-addon';

/** A failure reported by the addon: the call, its errno, and the entry's name (empty: the directory). */
export type ScanFailure = [call: string, errno: number, name: Buffer];
/** A failure reported by applyDir: the call, its errno, and the entry index (-1: the directory). */
export type ApplyFailure = [call: string, errno: number, index: number];
/** Raw (scan) or shifted (apply) ACL xattr values of one entry, by entry index. */
export type AclRow = [index: number, access: Uint8Array | null, dflt: Uint8Array | null];

/** Uint32 fields per scanned entry in ScanResult's meta. */
export const META_FIELDS = 10;

/**
 * meta holds META_FIELDS per entry: name start (in names), name length, uid, gid, mode, nlink,
 * ino low, ino high, dev major, dev minor.
 */
export type ScanResult = [
  count: number,
  meta: Uint32Array,
  names: Buffer,
  acls: AclRow[] | null,
  failure: ScanFailure | null,
];

export interface NativeWalker {
  /**
   * Reads the directory `dir` (or just its entry `only`: the root, never a mount point) and
   * statx's every entry once; skips other filesystems unless crossMounts; with acls, lists the
   * xattrs of every non-symlink and reads the POSIX ACL values listed. A vanished or replaced
   * directory gives no entries and no failure.
   */
  scanDir(
    dir: Buffer,
    only: Buffer | null,
    rootDevMajor: number,
    rootDevMinor: number,
    crossMounts: boolean,
    acls: boolean,
  ): ScanResult;
  /**
   * For entries from..to-1 of the parallel arrays (names NUL-terminated at nameStarts): lchown to
   * the scanned owner plus the offsets, write the ACL values given (sorted by index), then restore
   * setuid/setgid bits of regular files from the scanned mode. `dir` null: names are absolute paths.
   */
  applyDir(
    dir: Buffer | null,
    names: Uint8Array,
    nameStarts: Uint32Array,
    uids: Uint32Array,
    gids: Uint32Array,
    modes: Uint32Array,
    from: number,
    to: number,
    uidOffset: number,
    gidOffset: number,
    acls: AclRow[] | null,
  ): ApplyFailure | null;
}

/**
 * Where the addon is (native-addon: the prebuilt binary for this platform, else the one node-gyp
 * compiled here); an `unsupported` SysboxError naming what is missing when none loads. Walker threads
 * load it themselves from this path.
 */
export function nativeWalkerPath(): string {
  return addonPath({
    packageName: '@sysbox-mgr-ts/id-shift',
    packageRoot: new URL('..', import.meta.url),
    file: 'id_shift.node',
  });
}

/** Loads the addon in this thread. */
export function loadNativeWalker(): NativeWalker {
  return createRequire(import.meta.url)(nativeWalkerPath()) as NativeWalker;
}

/** A half-open range of ids, [min, max). */
export type IdRange = readonly [min: number, max: number];

/** Which ids a shift moves: a uid only inside `uid`, a gid only inside `gid`. */
export interface ShiftOnly {
  uid: IdRange;
  gid: IdRange;
}

/** Every id: a plain shift moves every owner and ACL qualifier. */
export const ALL_IDS: ShiftOnly = { uid: [0, 2 ** 32], gid: [0, 2 ** 32] };

/**
 * Shifts the ids of ACL_USER and ACL_GROUP entries in a system.posix_acl_* xattr value (little-endian
 * u32 version 2, then 8-byte entries: u16 tag, u16 perm, u32 id) that lie in `only`'s ranges. Returns
 * the shifted copy, or a description of the first entry whose shifted id would leave 0..2^32-2, or
 * of a malformed value.
 */
export function shiftAclXattr(
  value: Uint8Array,
  uidOffset: number,
  gidOffset: number,
  only: ShiftOnly,
): Buffer | string {
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
    const [min, max] = tag === ACL_USER ? only.uid : only.gid;
    if (id < min || id >= max) continue;
    const shifted = id + (tag === ACL_USER ? uidOffset : gidOffset);
    if (shifted < 0 || shifted > MAX_ID) return `ACL entry ${tag === ACL_USER ? 'user' : 'group'}:${id}`;
    out.writeUInt32LE(shifted, at + 4);
  }
  return out;
}
