/**
 * Mount and unmount with the syscalls (host-native's mountAsync/umountAsync, on a libuv pool
 * thread), each under a time bound. mount(8) in a child cost 8 ms a call (fork, exec, libmount
 * reading mountinfo), and a clone is six mounts and its removal as many unmounts: most of
 * create-clone's time (measured: 64 ms against a plain overlay mount's 9 ms). An overlay whose
 * options name its lowers relative to a directory (options too long for a page) still goes
 * through mount(8) with that cwd: the process's cwd is shared by its threads, so a syscall there
 * would need a chdir that every other thread sees.
 */
import { run, type DebugLogger } from '@sysbox-mgr-ts/exec/run';
import { withinTime } from '@sysbox-mgr-ts/service-kit';
// The addon alone: the package index also loads the user-namespace helpers and, through them,
// execa (3 MB of idle RSS a daemon that only mounts does not need).
import {
  MNT_DETACH,
  MS_BIND,
  MS_PRIVATE,
  MS_REC,
  MS_SHARED,
  MS_SLAVE,
  MS_UNBINDABLE,
  loadAddon,
} from '@sysbox-mgr-ts/host-native/addon';
import type { Propagation } from '@sysbox-mgr-ts/mountinfo';
import { MOUNT_FLAG_OPTIONS } from './overlay-plan.js';

export interface Mounter {
  /** Mounts an overlay; `cwd` resolves relative lowerdirs. */
  overlay(target: string, options: string, cwd: string | undefined): Promise<void>;
  setPropagation(target: string, propagation: Propagation): Promise<void>;
  /** A recursive bind mount (upstream's MS_BIND|MS_REC). */
  rbind(source: string, target: string): Promise<void>;
  /** Unmounts the topmost mount at `target`; `lazy` detaches it even while busy. */
  unmount(target: string, opts?: { lazy?: boolean }): Promise<void>;
}

const PROPAGATION_FLAG: Record<Propagation, number> = {
  shared: MS_SHARED,
  slave: MS_SLAVE,
  private: MS_PRIVATE,
  unbindable: MS_UNBINDABLE,
};

/**
 * An -o string as mount(8) takes it, as mount(2) takes it: the leading per-mount flags (the plan
 * puts them first) become MS_* bits, the rest is the filesystem's data, verbatim (escapes kept).
 */
export function splitMountOptions(options: string): { flags: number; data: string } {
  let flags = 0;
  let rest = options;
  for (;;) {
    const comma = rest.indexOf(',');
    const token = comma < 0 ? rest : rest.slice(0, comma);
    const flag = MOUNT_FLAG_OPTIONS.get(token);
    if (flag === undefined) return { flags, data: rest };
    flags |= flag;
    rest = comma < 0 ? '' : rest.slice(comma + 1);
  }
}

export function createMounter(opts: { timeoutMs: number; logger?: DebugLogger }): Mounter {
  const addon = loadAddon();
  /** A syscall that does not answer in time is a typed timeout; its pool thread stays with it. */
  const bounded = (what: string, call: () => Promise<void>): Promise<void> => {
    opts.logger?.debug({ what }, 'mount syscall');
    return withinTime(call(), opts.timeoutMs, what);
  };
  return {
    overlay: (target, options, cwd) =>
      cwd === undefined
        ? bounded(`mount overlay on ${target}`, () => {
            const { flags, data } = splitMountOptions(options);
            return addon.mountAsync('overlay', target, 'overlay', flags, data);
          })
        : run('mount', ['-t', 'overlay', 'overlay', '-o', options, target], {
            timeout: opts.timeoutMs,
            cwd,
            logger: opts.logger,
          }).then(() => undefined),
    setPropagation: (target, propagation) =>
      bounded(`make ${target} ${propagation}`, () =>
        addon.mountAsync('', target, '', PROPAGATION_FLAG[propagation], ''),
      ),
    rbind: (source, target) =>
      bounded(`rbind ${source} on ${target}`, () =>
        addon.mountAsync(source, target, '', MS_BIND | MS_REC, ''),
      ),
    unmount: (target, o) =>
      bounded(`unmount ${target}`, () => addon.umountAsync(target, o?.lazy ? MNT_DETACH : 0)),
  };
}
