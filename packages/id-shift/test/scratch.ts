/**
 * What the shift tests share: what the host offers (root, setfacl, python3), a scratch directory
 * per test file with a fresh subdirectory per test, the mounts a test made undone after it, and
 * readers of an entry's owner and ACL. Not part of the package's API.
 */
import { lstatSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { run } from '@sysbox-mgr-ts/exec';

export const isRoot = process.getuid?.() === 0;
export const canAcl = isRoot && statSync('/usr/bin/setfacl', { throwIfNoEntry: false }) !== undefined;
export const hasPython = statSync('/usr/bin/python3', { throwIfNoEntry: false }) !== undefined;
export const MAX_ID = 2 ** 32 - 2;

export interface Scratch {
  /** The file's scratch directory (set once its tests start). */
  readonly base: string;
  /** A new empty directory under `base`. */
  freshDir(): string;
  /** Mount points a test pushes here are lazily unmounted after it, the last first. */
  readonly mounts: string[];
}

/** Registers the hooks of a scratch directory in the calling test file. */
export function useScratch(): Scratch {
  let base = '';
  let n = 0;
  const mounts: string[] = [];
  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'id-shift-test-'));
  });
  afterEach(async () => {
    for (const m of mounts.splice(0).reverse())
      await run('umount', ['-l', m], { timeout: 10_000 }).catch(() => undefined);
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));
  return {
    get base() {
      return base;
    },
    freshDir() {
      const dir = join(base, `t${n++}`);
      mkdirSync(dir);
      return dir;
    },
    mounts,
  };
}

/** `uid:gid` of an entry, not following a symlink. */
export function owner(path: string): string {
  const st = lstatSync(path);
  return `${st.uid}:${st.gid}`;
}

export async function getfacl(path: string): Promise<string> {
  return (await run('getfacl', ['--numeric', '--omit-header', '--physical', path], { timeout: 10_000 }))
    .stdout;
}
