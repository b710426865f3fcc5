import { realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path';

/** True when `path` is `base` or lies below it (normalized absolute paths). */
export function isAtOrBelow(base: string, path: string): boolean {
  const rel = relative(base, path);
  return rel === '' || (!isAbsolute(rel) && rel.split(sep)[0] !== '..');
}

/** `path` and each of its parents up to `/`, nearest first. */
export function selfAndAncestors(path: string): string[] {
  const out = [path];
  for (let p = path; p !== dirname(p);) out.push((p = dirname(p)));
  return out;
}

/**
 * The realpath of a path that may not exist yet (a data root before the first start): its
 * longest existing prefix resolved, the missing tail appended as spelled.
 */
export async function realpathAllowingMissing(path: string): Promise<string> {
  const tail: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    try {
      return join(await realpath(p), ...tail.reverse());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || p === dirname(p)) throw err;
      tail.push(basename(p));
    }
  }
}
