/**
 * Host set-up of the subordinate id pool, as upstream sysbox-mgr does at start: /etc/subuid and
 * /etc/subgid each end up with exactly one entry for the sysbox user, of the pool size, in a
 * hole that is free in both files (so a container's uid and gid ranges start at the same id).
 * Parsing and planning are pure; only `setupSubidPool` touches files.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MAX_ID, SysboxError } from '@sysbox-mgr-ts/contracts';

/** SUB_UID_MIN/MAX and SUB_GID_MIN/MAX; each max is the last usable id (inclusive). */
export interface SubidLimits {
  uidMin: number;
  uidMax: number;
  gidMin: number;
  gidMax: number;
}

/**
 * Upstream sysbox-mgr's defaults when /etc/login.defs does not name a limit: 100000 up to the top
 * of the 32-bit id space (upstream's 4294967295 bound; the last id a range may hold is 2^32-2,
 * since 2^32-1 is (uid_t)-1). Not shadow's 600100000: a host that outgrew shadow's default range
 * under upstream keeps its pool here.
 */
export const DEFAULT_LIMITS: SubidLimits = {
  uidMin: 100000,
  uidMax: MAX_ID,
  gidMin: 100000,
  gidMax: MAX_ID,
};

const LIMIT_KEYS = {
  SUB_UID_MIN: 'uidMin',
  SUB_UID_MAX: 'uidMax',
  SUB_GID_MIN: 'gidMin',
  SUB_GID_MAX: 'gidMax',
} as const;

export function parseLoginDefs(text: string, path = 'login.defs'): SubidLimits {
  const limits = { ...DEFAULT_LIMITS };
  text.split('\n').forEach((raw, i) => {
    const fields = raw.trim().split(/\s+/);
    const key = fields[0] as keyof typeof LIMIT_KEYS;
    if (!Object.hasOwn(LIMIT_KEYS, key)) return;
    const value = fields[1];
    if (value === undefined || !/^\d+$/.test(value) || Number(value) > MAX_ID) {
      throw new SysboxError(
        'failed-precondition',
        `${path}:${i + 1}: ${key} needs a number from 0 to ${MAX_ID}, found "${raw.trim()}"`,
      );
    }
    limits[LIMIT_KEYS[key]] = Number(value);
  });
  if (limits.uidMin > limits.uidMax || limits.gidMin > limits.gidMax) {
    throw new SysboxError(
      'failed-precondition',
      `${path}: SUB_UID_MIN/SUB_GID_MIN must not exceed SUB_UID_MAX/SUB_GID_MAX`,
    );
  }
  return limits;
}

/** One line of a subuid/subgid file; blank and comment lines are kept verbatim. */
export type SubidLine = { name: string; start: number; count: number } | { verbatim: string };

export function parseSubidFile(text: string, path = 'subid file'): SubidLine[] {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return { verbatim: raw };
    const m = /^([^:\s]+):(\d+):(\d+)$/.exec(line);
    if (!m || Number(m[2]) > MAX_ID || Number(m[3]) < 1 || Number(m[2]) + Number(m[3]) - 1 > MAX_ID) {
      throw new SysboxError(
        'failed-precondition',
        `${path}:${i + 1}: expected name:start:count, found "${line}"`,
      );
    }
    return { name: m[1]!, start: Number(m[2]), count: Number(m[3]) };
  });
}

export function renderSubidFile(lines: readonly SubidLine[]): string {
  return (
    lines.map((l) => ('verbatim' in l ? l.verbatim : `${l.name}:${l.start}:${l.count}`)).join('\n') + '\n'
  );
}

export interface PoolPlanInput {
  user: string;
  size: number;
  limits: SubidLimits;
  uidLines: readonly SubidLine[];
  gidLines: readonly SubidLine[];
  /** Names used in error messages. */
  uidPath?: string;
  gidPath?: string;
}

export interface PoolPlan {
  start: number;
  /** The new file text, or undefined when the file already holds exactly this entry. */
  uidText: string | undefined;
  gidText: string | undefined;
}

type Entry = { name: string; start: number; count: number };
const isEntry = (l: SubidLine): l is Entry => !('verbatim' in l);

/**
 * Chooses where the pool lives. An existing sysbox entry keeps its start when the pool still
 * fits there without touching another user's range (containers keep their ids across an
 * upgrade or a resize); otherwise the first hole free in both files within both limits.
 */
export function planSubidPool(input: PoolPlanInput): PoolPlan {
  const { user, size } = input;
  const uidPath = input.uidPath ?? 'subuid';
  const gidPath = input.gidPath ?? 'subgid';
  const others = [...input.uidLines, ...input.gidLines]
    .filter(isEntry)
    .filter((e) => e.name !== user)
    .sort((a, b) => a.start - b.start);
  const freeInBoth = (start: number): boolean =>
    start + size - 1 <= MAX_ID && others.every((o) => o.start + o.count <= start || o.start >= start + size);

  const previous = [...input.uidLines, ...input.gidLines].filter(isEntry).filter((e) => e.name === user);
  let start = previous.map((e) => e.start).find(freeInBoth);
  if (start === undefined) {
    const lo = Math.max(input.limits.uidMin, input.limits.gidMin);
    const hi = Math.min(input.limits.uidMax, input.limits.gidMax);
    let cursor = lo;
    for (const o of others) {
      if (o.start + o.count <= cursor) continue;
      if (o.start >= cursor + size) break;
      cursor = o.start + o.count;
    }
    if (cursor + size - 1 > hi) {
      throw new SysboxError(
        'failed-precondition',
        `no range of ${size} ids for user ${user} is free in both ${uidPath} (SUB_UID_MIN..SUB_UID_MAX ${input.limits.uidMin}..${input.limits.uidMax}) ` +
          `and ${gidPath} (SUB_GID_MIN..SUB_GID_MAX ${input.limits.gidMin}..${input.limits.gidMax}): ` +
          `free or move other users' ranges, raise SUB_UID_MAX/SUB_GID_MAX in login.defs, or lower --pool-size`,
      );
    }
    start = cursor;
  }
  const entry: Entry = { name: user, start, count: size };
  return { start, uidText: placeEntry(input.uidLines, entry), gidText: placeEntry(input.gidLines, entry) };
}

/** The file with `entry` as the user's only line (where the first old one was), or undefined if unchanged. */
function placeEntry(lines: readonly SubidLine[], entry: Entry): string | undefined {
  const own = lines.filter(isEntry).filter((l) => l.name === entry.name);
  if (own.length === 1 && own[0]!.start === entry.start && own[0]!.count === entry.count) return undefined;
  const at = lines.findIndex((l) => isEntry(l) && l.name === entry.name);
  const kept = lines.filter((l) => !(isEntry(l) && l.name === entry.name));
  kept.splice(at < 0 ? kept.length : at, 0, entry);
  return renderSubidFile(kept);
}

/** Replaces the file in one step: a crash leaves the old or the new content, never a torn one. */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const old = await stat(path).catch(() => undefined);
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', old ? old.mode & 0o7777 : 0o644);
    try {
      await fh.writeFile(text);
      if (old) await fh.chown(old.uid, old.gid);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export interface HostFiles {
  subuidFile: string;
  subgidFile: string;
  loginDefs: string;
}

export interface PoolSetup {
  start: number;
  size: number;
  /** Files that were rewritten. */
  written: string[];
}

export async function setupSubidPool(opts: HostFiles & { user: string; size: number }): Promise<PoolSetup> {
  const limits = parseLoginDefs((await readIfPresent(opts.loginDefs)) ?? '', opts.loginDefs);
  const plan = planSubidPool({
    user: opts.user,
    size: opts.size,
    limits,
    uidLines: parseSubidFile((await readIfPresent(opts.subuidFile)) ?? '', opts.subuidFile),
    gidLines: parseSubidFile((await readIfPresent(opts.subgidFile)) ?? '', opts.subgidFile),
    uidPath: opts.subuidFile,
    gidPath: opts.subgidFile,
  });
  const written: string[] = [];
  for (const [path, text] of [
    [opts.subuidFile, plan.uidText],
    [opts.subgidFile, plan.gidText],
  ] as const) {
    if (text === undefined) continue;
    await writeFileAtomic(path, text);
    written.push(path);
  }
  return { start: plan.start, size: opts.size, written };
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
