/**
 * Reproducible trees for tests and the bench: directories of ~50 entries with regular files,
 * symlinks (some pointing outside the tree), hard links, setuid/setgid files and a few owners.
 * Not part of the package's API.
 */
import { seededRandom } from '@sysbox-mgr-ts/bench-kit';
import {
  chmodSync,
  linkSync,
  lstatSync,
  lchownSync,
  mkdirSync,
  readdirSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

export interface TreeSpec {
  /** Top-level directories. */
  top: number;
  /** Directories under each top-level one. */
  sub: number;
  /** Entries in each of those. */
  perDir: number;
  /** Owners handed out round-robin (uid = gid). */
  owners: readonly number[];
  /** Where the outward symlinks point. */
  outside: string;
  seed?: number;
}

/** The 100,000-entry tree of the bench: 40 × 50 directories of 49 entries (+ the directories). */
export const BENCH_TREE: Omit<TreeSpec, 'outside'> = {
  top: 40,
  sub: 50,
  perDir: 49,
  owners: [0, 33, 1000, 1001, 65534],
};

/** Builds the tree under `root` (created) and returns its entry count, the root included. */
export function buildTree(root: string, spec: TreeSpec): number {
  const rand = seededRandom(spec.seed ?? 1);
  const owner = (): number => spec.owners[Math.floor(rand() * spec.owners.length)]!;
  mkdirSync(root, { recursive: true });
  let entries = 1;
  for (let a = 0; a < spec.top; a++) {
    const top = join(root, `d${a}`);
    mkdirSync(top);
    lchownSync(top, owner(), owner());
    entries++;
    for (let b = 0; b < spec.sub; b++) {
      const dir = join(top, `s${b}`);
      mkdirSync(dir);
      entries++;
      for (let c = 0; c < spec.perDir; c++) {
        const path = join(dir, `f${c}`);
        const kind = c === 0 ? 'file' : rand();
        if (typeof kind === 'number' && kind < 0.08) symlinkSync(kind < 0.02 ? spec.outside : 'f0', path);
        else if (typeof kind === 'number' && kind < 0.12) linkSync(join(dir, 'f0'), path);
        else writeFileSync(path, '');
        // Hard links share f0's owner: lchown would change every name at once.
        if (typeof kind !== 'number' || kind >= 0.12 || kind < 0.08) lchownSync(path, owner(), owner());
        // After the chown, which clears setuid and setgid bits: set before, the tree had none.
        if (typeof kind === 'number' && kind > 0.985) chmodSync(path, kind > 0.993 ? 0o4755 : 0o2755);
        entries++;
      }
      lchownSync(dir, owner(), owner());
    }
  }
  return entries;
}

export interface EntryState {
  uid: number;
  gid: number;
  mode: number;
}

/** Owner and mode of every entry, without following symlinks or leaving the root's filesystem. */
export function snapshotOwners(root: string): Map<string, EntryState> {
  const out = new Map<string, EntryState>();
  const rootDev = lstatSync(root).dev;
  const visit = (path: string): void => {
    const st = lstatSync(path);
    if (st.isDirectory() && st.dev !== rootDev) return;
    out.set(path, { uid: st.uid, gid: st.gid, mode: st.mode });
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root);
  return out;
}
