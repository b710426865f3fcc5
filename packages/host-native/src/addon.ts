/**
 * The native addon (native/host_native.c), found by native-addon: the prebuilt binary for this
 * platform, else the one node-gyp compiled here. Loaded on first use, so importing this package never
 * fails; a call on a host where no binary loads throws an `unsupported` SysboxError naming what is
 * missing.
 */
import { loadAddon as loadPackageAddon } from '@sysbox-mgr-ts/native-addon';

/** The addon's functions. Each throws an Error with `code` (errno name), `errno` and `syscall` on failure. */
export interface HostNativeAddon {
  /** open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) + mount_setattr(MOUNT_ATTR_IDMAP, usernsFd) + move_mount onto path. */
  idmapMount(path: string, usernsFd: number): void;
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  umount(target: string, flags: number): void;
  /** mount(2) on a libuv pool thread: a mount that hangs holds that thread, not the event loop. */
  mountAsync(source: string, target: string, fstype: string, flags: number, data: string): Promise<void>;
  /** umount2(2) on a libuv pool thread. */
  umountAsync(target: string, flags: number): Promise<void>;
  /** One datagram to an AF_UNIX SOCK_DGRAM socket; '@name' is an abstract socket. */
  notify(socketPath: string, message: string): void;
  /** A non-blocking datagram socket bound to path, SO_PASSCRED on; returns its fd. */
  bindDatagram(path: string): number;
  /** One queued datagram and its sender's pid, or null when none is queued. */
  receive(fd: number): [message: string, pid: number] | null;
  close(fd: number): void;
}

let addon: HostNativeAddon | undefined;

export function loadAddon(): HostNativeAddon {
  return (addon ??= loadPackageAddon<HostNativeAddon>({
    packageName: '@sysbox-mgr-ts/host-native',
    packageRoot: new URL('..', import.meta.url),
    file: 'host_native.node',
  }));
}

/** mount(2) and umount2(2) flags the callers use (<linux/mount.h>, <sys/mount.h>). */
export const MNT_DETACH = 2;
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_SYNCHRONOUS = 0x10;
export const MS_NOATIME = 0x400;
export const MS_NODIRATIME = 0x800;
export const MS_RELATIME = 1 << 21;
export const MS_STRICTATIME = 1 << 24;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_UNBINDABLE = 1 << 17;
export const MS_PRIVATE = 1 << 18;
export const MS_SLAVE = 1 << 19;
export const MS_SHARED = 1 << 20;
