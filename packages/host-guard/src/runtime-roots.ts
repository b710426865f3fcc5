/**
 * Where this host's container runtimes keep their rootfs, read from what the host declares:
 * Docker's daemon.json `data-root` (or a running dockerd's `--data-root`), containerd's
 * config.toml `root`/`state`, containers-storage's storage.conf `graphroot`/`runroot`, k3s and
 * rke2's config.yaml `data-dir`. A runtime whose file declares nothing (or does not exist) counts
 * with its own default store, as the runtime itself would use it.
 */
import { readdir, readFile } from 'node:fs/promises';
import { basename, isAbsolute, normalize } from 'node:path';

/** One allowed root and where it came from (a file and key, a flag, a process, a default). */
export interface RootfsRoot {
  path: string;
  source: string;
}

/** The runtime config files to read; each left out is not read (and its runtime not counted). */
export interface RuntimeConfigPaths {
  /** Docker's daemon.json (`data-root`). */
  dockerConfig?: string;
  /** containerd's config.toml (top-level `root` and `state`). */
  containerdConfig?: string;
  /** containers-storage's storage.conf (`[storage] graphroot` and `runroot`): podman, CRI-O, buildah. */
  containersStorageConfig?: string;
  /** k3s's config.yaml (`data-dir`). */
  k3sConfig?: string;
  /** rke2's config.yaml (`data-dir`). */
  rke2Config?: string;
  /** Where to look for a running dockerd's `--data-root` (its /proc/<pid>/cmdline). */
  procDir?: string;
}

/** Each runtime's own default store, used when its config declares none. */
export const RUNTIME_DEFAULT_ROOTS = {
  docker: ['/var/lib/docker'],
  containerd: ['/var/lib/containerd', '/run/containerd'],
  containersStorage: ['/var/lib/containers/storage', '/run/containers/storage'],
  k3s: ['/var/lib/rancher/k3s'],
  rke2: ['/var/lib/rancher/rke2'],
} as const;

type Parsed = Record<string, unknown>;
type Reader = (text: string) => Parsed | Promise<Parsed>;

// The TOML and YAML parsers load with the first file that needs them: a host without containerd's
// or k3s's config never loads them (measured: yaml 3.9 MB of RSS, smol-toml 0.5 MB).
const readJson: Reader = (t) => JSON.parse(t) as Parsed;
const readToml: Reader = async (t) => (await import('smol-toml')).parse(t) as Parsed;
const readYaml: Reader = async (t) => ((await import('yaml')).parse(t) ?? {}) as Parsed;

/** The file parsed, undefined when it does not exist; a note when it cannot be read or parsed. */
async function readConfig(file: string, parse: Reader, notes: string[]): Promise<Parsed | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') notes.push(`${file} unreadable: ${String(err)}`);
    return undefined;
  }
  try {
    const parsed = await parse(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      throw new Error('not a table');
    return parsed;
  } catch (err) {
    notes.push(
      `${file} not parsed (${(err as Error).message.split('\n')[0]}): its runtime counts with its defaults`,
    );
    return {};
  }
}

/** A declared store path worth counting: absolute, and not `/` itself (that would allow the whole host). */
function usable(value: unknown): string | undefined {
  if (typeof value !== 'string' || !isAbsolute(value)) return undefined;
  const p = normalize(value).replace(/(.)\/+$/, '$1');
  return p === '/' ? undefined : p;
}

/**
 * The roots one runtime declares in `file` under `keys` (looked up with `get`), or its defaults
 * for each key it leaves out.
 */
async function declared(
  file: string | undefined,
  parse: Reader,
  runtime: string,
  keys: readonly { key: string; get: (c: Parsed) => unknown; fallback: string }[],
  notes: string[],
): Promise<RootfsRoot[]> {
  if (file === undefined) return [];
  const conf = await readConfig(file, parse, notes);
  return keys.map(({ key, get, fallback }) => {
    const path = conf === undefined ? undefined : usable(get(conf));
    return path === undefined
      ? { path: fallback, source: `${runtime}'s default (${key} not set in ${file})` }
      : { path, source: `${key} in ${file}` };
  });
}

const table = (c: Parsed, name: string): Parsed => {
  const t = c[name];
  return t !== null && typeof t === 'object' && !Array.isArray(t) ? (t as Parsed) : {};
};

/** `--data-root` of each running dockerd visible in `procDir`. */
export async function dockerdDataRoots(procDir: string): Promise<RootfsRoot[]> {
  const pids = (await readdir(procDir).catch(() => [] as string[])).filter((e) => /^\d+$/.test(e));
  const out: RootfsRoot[] = [];
  await Promise.all(
    pids.map(async (pid) => {
      const argv = (await readFile(`${procDir}/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
      if (basename(argv[0] ?? '') !== 'dockerd') return;
      for (let i = 1; i < argv.length; i++) {
        const a = argv[i]!;
        const value = a.startsWith('--data-root=')
          ? a.slice('--data-root='.length)
          : a === '--data-root'
            ? argv[i + 1]
            : undefined;
        const path = usable(value);
        if (path !== undefined) out.push({ path, source: `--data-root of the running dockerd (pid ${pid})` });
      }
    }),
  );
  return out.sort((a, b) => a.source.localeCompare(b.source));
}

/**
 * Every runtime store this host declares (see the file comment), in a stable order, with notes on
 * files that exist but could not be read or parsed.
 */
export async function readRuntimeRoots(
  paths: RuntimeConfigPaths,
): Promise<{ roots: RootfsRoot[]; notes: string[] }> {
  const notes: string[] = [];
  const d = RUNTIME_DEFAULT_ROOTS;
  const parts = await Promise.all([
    declared(
      paths.dockerConfig,
      readJson,
      'docker',
      [{ key: 'data-root', get: (c) => c['data-root'], fallback: d.docker[0] }],
      notes,
    ),
    paths.procDir === undefined ? [] : dockerdDataRoots(paths.procDir),
    declared(
      paths.containerdConfig,
      readToml,
      'containerd',
      [
        { key: 'root', get: (c) => c.root, fallback: d.containerd[0] },
        { key: 'state', get: (c) => c.state, fallback: d.containerd[1] },
      ],
      notes,
    ),
    declared(
      paths.containersStorageConfig,
      readToml,
      'containers-storage',
      [
        {
          key: 'storage.graphroot',
          get: (c) => table(c, 'storage').graphroot,
          fallback: d.containersStorage[0],
        },
        { key: 'storage.runroot', get: (c) => table(c, 'storage').runroot, fallback: d.containersStorage[1] },
      ],
      notes,
    ),
    declared(
      paths.k3sConfig,
      readYaml,
      'k3s',
      [{ key: 'data-dir', get: (c) => c['data-dir'], fallback: d.k3s[0] }],
      notes,
    ),
    declared(
      paths.rke2Config,
      readYaml,
      'rke2',
      [{ key: 'data-dir', get: (c) => c['data-dir'], fallback: d.rke2[0] }],
      notes,
    ),
  ]);
  const seen = new Set<string>();
  const roots = parts.flat().filter((r) => !seen.has(r.path) && seen.add(r.path));
  return { roots, notes };
}
