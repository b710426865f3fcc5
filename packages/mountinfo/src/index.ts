/** Reads /proc/<pid>/mountinfo (proc(5)) and answers questions about mounts and overlayfs options. */
import { readFile } from 'node:fs/promises';

export type Propagation = 'shared' | 'slave' | 'private' | 'unbindable';

export interface MountEntry {
  mountId: number;
  parentId: number;
  majorMinor: string;
  /** The path inside the mounted filesystem that is the root of this mount (a bind mount's source). */
  root: string;
  mountPoint: string;
  /** Per-mount options (ro, nosuid, nodev, noexec, relatime, …). */
  mountOptions: string[];
  /** Optional fields: shared:N, master:N, propagate_from:N, unbindable. */
  optionalFields: string[];
  fsType: string;
  source: string;
  /** Per-superblock options (for overlay: lowerdir, upperdir, workdir, …). */
  superOptions: string[];
}

/** Mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 3) throw new Error(`malformed mountinfo line: ${line}`);
    entries.push({
      mountId: Number(fields[0]),
      parentId: Number(fields[1]),
      majorMinor: fields[2]!,
      root: unescapeOctal(fields[3]!),
      mountPoint: unescapeOctal(fields[4]!),
      mountOptions: fields[5]!.split(','),
      optionalFields: fields.slice(6, sep),
      fsType: fields[sep + 1]!,
      source: unescapeOctal(fields[sep + 2]!),
      superOptions: splitOptions(unescapeOctal(fields[sep + 3] ?? '')),
    });
  }
  return entries;
}

/** Splits a comma-separated option list, honouring backslash-escaped commas (overlayfs escapes them). */
function splitOptions(options: string): string[] {
  if (!options) return [];
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === '\\' && options[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

export async function readMountInfo(path = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountInfo(await readFile(path, 'utf8'));
}

/** Every mount stacked on `mountPoint`, bottom first (later lines are mounted on top). */
export function mountsAt(mounts: readonly MountEntry[], mountPoint: string): MountEntry[] {
  return mounts.filter((m) => m.mountPoint === mountPoint);
}

/** The visible (topmost) mount at `mountPoint`, if any. */
export function topMountAt(mounts: readonly MountEntry[], mountPoint: string): MountEntry | undefined {
  const at = mountsAt(mounts, mountPoint);
  return at[at.length - 1];
}

/** Mounts at or below `dir`, deepest first (the order to unmount them in). */
export function mountsUnder(mounts: readonly MountEntry[], dir: string): MountEntry[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return mounts
    .filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(prefix))
    .map((m, i) => ({ m, i }))
    .sort((a, b) => b.m.mountPoint.length - a.m.mountPoint.length || b.i - a.i)
    .map(({ m }) => m);
}

/** The mount that holds `path`: the topmost mount whose mount point is the longest prefix of it. */
export function mountContaining(mounts: readonly MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    const mp = m.mountPoint;
    const holds = mp === '/' || path === mp || path.startsWith(`${mp}/`);
    if (holds && (!best || mp.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

export function propagationOf(m: MountEntry): Propagation {
  if (m.optionalFields.includes('unbindable')) return 'unbindable';
  if (m.optionalFields.some((f) => f.startsWith('shared:'))) return 'shared';
  if (m.optionalFields.some((f) => f.startsWith('master:'))) return 'slave';
  return 'private';
}

export interface OverlayOptions {
  lowerDirs: string[];
  upperDir: string | undefined;
  workDir: string | undefined;
  /** Every other superblock option, in order (rw, index=on, metacopy=on, …). */
  other: string[];
}

/** Splits overlayfs options; lowerdir entries are `:`-separated, top layer first. */
export function overlayOptions(options: readonly string[]): OverlayOptions {
  const out: OverlayOptions = { lowerDirs: [], upperDir: undefined, workDir: undefined, other: [] };
  for (const opt of options) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? '' : opt.slice(eq + 1);
    if (key === 'lowerdir') out.lowerDirs.push(...value.split(/(?<!\\):/).map((d) => d.replace(/\\:/g, ':')));
    else if (key === 'lowerdir+') out.lowerDirs.push(value);
    else if (key === 'upperdir') out.upperDir = value;
    else if (key === 'workdir') out.workDir = value;
    else out.other.push(opt);
  }
  return out;
}
