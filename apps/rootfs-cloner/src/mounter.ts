/** Mount and unmount through mount(8)/umount(8): argument arrays and a time bound on every call. */
import { run, type DebugLogger } from '@sysbox-mgr-ts/exec/run';
import type { Propagation } from '@sysbox-mgr-ts/mountinfo';

export interface Mounter {
  /** Mounts an overlay; `cwd` resolves relative lowerdirs. */
  overlay(target: string, options: string, cwd: string | undefined): Promise<void>;
  setPropagation(target: string, propagation: Propagation): Promise<void>;
  /** A recursive bind mount (`mount --rbind`), as upstream's MS_BIND|MS_REC. */
  rbind(source: string, target: string): Promise<void>;
  /** Unmounts the topmost mount at `target`; `lazy` detaches it even while busy. */
  unmount(target: string, opts?: { lazy?: boolean }): Promise<void>;
}

export function createMounter(opts: { timeoutMs: number; logger?: DebugLogger }): Mounter {
  const exec = (file: string, args: string[], cwd?: string) =>
    run(file, args, { timeout: opts.timeoutMs, cwd, logger: opts.logger }).then(() => undefined);
  return {
    overlay: (target, options, cwd) => exec('mount', ['-t', 'overlay', 'overlay', '-o', options, target], cwd),
    setPropagation: (target, propagation) => exec('mount', [`--make-${propagation}`, target]),
    rbind: (source, target) => exec('mount', ['--rbind', source, target]),
    unmount: (target, o) => exec('umount', o?.lazy ? ['-l', target] : [target]),
  };
}
