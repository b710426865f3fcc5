/**
 * A package's Node-API addon: the prebuilt binary shipped for this platform
 * (`prebuilds/<platform>-<arch>/<file>`, linux-x64 with glibc), else the one node-gyp compiled here
 * (`build/Release/<file>`, by the install script or the nx build). The first that loads in this
 * process wins and is remembered; when none loads, an `unsupported` SysboxError says what was tried
 * and how to compile it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SysboxError } from '@sysbox-mgr-ts/contracts';

export interface AddonLocation {
  /** The npm package that ships the addon, for the message (`@sysbox-mgr-ts/id-shift`). */
  packageName: string;
  /** The package's root folder, as a path or a file: URL (`new URL('..', import.meta.url)`). */
  packageRoot: string | URL;
  /** The addon's file name (`id_shift.node`). */
  file: string;
}

const require = createRequire(import.meta.url);
/** What loaded, by the first candidate's path (one package folder, one file). */
const found = new Map<string, string>();

/** The candidate paths, in the order they are tried. */
export function addonCandidates(at: AddonLocation): string[] {
  const root = typeof at.packageRoot === 'string' ? at.packageRoot : fileURLToPath(at.packageRoot);
  return [
    join(root, 'prebuilds', `${process.platform}-${process.arch}`, at.file),
    join(root, 'build', 'Release', at.file),
  ];
}

/** The path of the first candidate that loads here (a worker thread loads it again from there). */
export function addonPath(at: AddonLocation): string {
  const candidates = addonCandidates(at);
  const key = candidates[0]!;
  const known = found.get(key);
  if (known) return known;
  const tried: string[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) {
      tried.push(`${path} (missing)`);
      continue;
    }
    try {
      require(path);
      found.set(key, path);
      return path;
    } catch (err) {
      tried.push(`${path} (${(err as Error).message.split('\n')[0]})`);
    }
  }
  throw new SysboxError(
    'unsupported',
    `${at.packageName}: no prebuilt ${at.file} for ${process.platform}-${process.arch} loads here and none was compiled; ` +
      `tried ${tried.join(', ')}. Compile it (needs a C compiler, make and python3): ` +
      `\`npm rebuild ${at.packageName}\` where it is installed, \`npx nx build ${at.packageName}\` in the repository`,
  );
}

/** The loaded addon's exports. */
export function loadAddon<T>(at: AddonLocation): T {
  return require(addonPath(at)) as T;
}
