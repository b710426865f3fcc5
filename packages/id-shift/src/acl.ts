/**
 * POSIX ACLs through Debian's acl tools: Node's fs can neither list nor read xattrs, and this
 * package takes no native addon. One `getfacl --skip-base -R` over the tree finds every entry that
 * has an extended ACL (it prints nothing for the others), and one `setfacl --restore=-` writes all
 * the shifted ACLs back: two processes per shift, however many ACLs there are.
 */
import { run, type DebugLogger } from '@sysbox-mgr-ts/exec';

/** Trees of millions of entries take minutes to dump; a hung tool still ends. */
const ACL_TOOL_TIMEOUT_MS = 30 * 60_000;
const MAX_ID = 2 ** 32 - 2;

export interface AclRecord {
  /** The path as getfacl printed it (octal escapes kept), handed back to setfacl verbatim. */
  rawPath: string;
  /** The decoded path, to compare with paths the walk saw. */
  path: string;
  /** `# flags:` line when present: setfacl --restore resets setuid/setgid/sticky from it. */
  flags?: string;
  /** ACL entries such as `user:1000:rw-` or `default:group::r-x`. */
  entries: string[];
}

/** Decodes getfacl's escapes: `\\` and three-digit octal bytes (`\012` for a newline). */
export function decodeAclPath(raw: string): string {
  const bytes: number[] = [];
  const src = Buffer.from(raw, 'utf8');
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 0x5c && src[i + 1] === 0x5c) {
      bytes.push(0x5c);
      i++;
    } else if (c === 0x5c && /^[0-7]{3}$/.test(src.subarray(i + 1, i + 4).toString('latin1'))) {
      bytes.push(parseInt(src.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
    } else {
      bytes.push(c);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

export function parseGetfaclDump(text: string): AclRecord[] {
  const records: AclRecord[] = [];
  let current: AclRecord | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const rawPath = line.slice('# file: '.length);
      current = { rawPath, path: decodeAclPath(rawPath), entries: [] };
      records.push(current);
    } else if (current && line.startsWith('# flags: ')) {
      current.flags = line;
    } else if (current && line !== '' && !line.startsWith('#')) {
      current.entries.push(line);
    }
  }
  return records;
}

/** `[default:]user:ID:perms` / `[default:]group:ID:perms`: the entries that name an id. */
const QUALIFIED = /^((?:default:)?(user|group)):(\d+):(.*)$/;

/** The first record whose shifted qualifier would leave 0..2^32-2, described for an error. */
export function findAclOverflow(records: readonly AclRecord[], uidOffset: number, gidOffset: number): string | undefined {
  for (const rec of records) {
    for (const entry of rec.entries) {
      const m = QUALIFIED.exec(entry);
      if (!m) continue;
      const shifted = Number(m[3]) + (m[2] === 'user' ? uidOffset : gidOffset);
      if (shifted < 0 || shifted > MAX_ID) return `${rec.path} (ACL entry ${entry})`;
    }
  }
  return undefined;
}

export function shiftAclRecord(rec: AclRecord, uidOffset: number, gidOffset: number): AclRecord {
  return {
    ...rec,
    entries: rec.entries.map((entry) => {
      const m = QUALIFIED.exec(entry);
      if (!m) return entry;
      return `${m[1]}:${Number(m[3]) + (m[2] === 'user' ? uidOffset : gidOffset)}:${m[4]}`;
    }),
  };
}

/**
 * The input for `setfacl --restore`. Owner and group lines are left out on purpose: with them
 * setfacl would chown again, and the walk has already set the owners.
 */
export function formatRestore(records: readonly AclRecord[]): string {
  return records
    .map((r) => [`# file: ${r.rawPath}`, ...(r.flags ? [r.flags] : []), ...r.entries, ''].join('\n'))
    .join('\n');
}

export async function readAcls(absRoot: string, signal?: AbortSignal, logger?: DebugLogger): Promise<AclRecord[]> {
  const r = await run('getfacl', ['--skip-base', '--recursive', '--physical', '--numeric', '--absolute-names', absRoot], {
    timeout: ACL_TOOL_TIMEOUT_MS,
    ...(signal ? { signal } : {}),
    ...(logger ? { logger } : {}),
  });
  return parseGetfaclDump(r.stdout);
}

export async function writeAcls(records: readonly AclRecord[], logger?: DebugLogger): Promise<void> {
  if (records.length === 0) return;
  await run('setfacl', ['--restore=-'], {
    timeout: ACL_TOOL_TIMEOUT_MS,
    input: formatRestore(records),
    ...(logger ? { logger } : {}),
  });
}
