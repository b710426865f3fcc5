import { posix } from 'node:path';
import { z } from 'zod';

/** Largest valid uid/gid: 2^32-1 is (uid_t)-1, which chown reads as "leave unchanged". */
export const MAX_ID = 2 ** 32 - 2;

/**
 * A container id is a single path token, never a path: the rule runc applies to ids
 * (`^[\w+.-]+$`, not `.` or `..`), capped at 128 characters.
 */
export const ContainerId = z
  .string()
  .min(1, 'container id is empty')
  .max(128, 'container id is longer than 128 characters')
  .regex(/^[\w+.-]+$/, 'container id may hold only letters, digits and _ + . -')
  .refine((id) => id !== '.' && id !== '..', 'container id may not be . or ..');

function isNormalizedAbsolute(path: string): boolean {
  return path.startsWith('/') && posix.normalize(path) === path && (path === '/' || !path.endsWith('/'));
}

/** An absolute, normalized host path (no `..`, no `//`, no trailing slash, no NUL). */
export const HostPath = z
  .string()
  .min(1, 'path is empty')
  .max(4096, 'path is longer than 4096 characters')
  .refine((p) => !/[\x00-\x1f]/.test(p), 'path may not hold NUL or control characters')
  .refine(isNormalizedAbsolute, 'path must be absolute and normalized');

/** Whether a path's `..` components never climb above its root (`/a/../../b` does). */
function staysBelowRoot(path: string): boolean {
  let depth = 0;
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    depth += part === '..' ? -1 : 1;
    if (depth < 0) return false;
  }
  return true;
}

/**
 * A path inside the container, as sysbox-runc passes it from the container's own config files
 * (an inner Docker's `data-root`, k3s' `data-dir`): written by people, so `/var/lib/docker/`,
 * `//var/lib//docker` and `/var/lib/docker/.` are accepted and normalized, as upstream does.
 * Refused: empty, relative, control characters, and `..` that would climb out of the rootfs.
 */
export const ContainerPath = z
  .string()
  .min(1, 'path is empty')
  .max(4096, 'path is longer than 4096 characters')
  .refine((p) => !/[\x00-\x1f]/.test(p), 'path may not hold NUL or control characters')
  .refine((p) => p.startsWith('/'), 'container path must be absolute')
  .refine(staysBelowRoot, 'container path climbs above the container root with ..')
  .transform((p) => {
    const normalized = posix.normalize(p);
    return normalized.length > 1 ? normalized.replace(/\/+$/, '') : normalized;
  });

export const Id = z.number().int('id must be an integer').min(0).max(MAX_ID);
export const Offset = z
  .number()
  .int('offset must be an integer')
  .min(-(2 ** 31))
  .max(2 ** 31 - 1);

/** Permission bits of a directory, 0..0o7777. */
export const FileMode = z.number().int().min(0).max(0o7777);

export const OciMount = z.object({
  destination: ContainerPath,
  type: z.string().min(1).max(64),
  source: z.string().min(1).max(4096),
  options: z.array(z.string().max(4096)).max(64),
});
export type OciMount = z.infer<typeof OciMount>;

export const IdMapping = z.object({
  containerId: Id,
  hostId: Id,
  size: z
    .number()
    .int()
    .min(1)
    .max(2 ** 32),
});
export type IdMapping = z.infer<typeof IdMapping>;

/** A NATS subject token for the node name: lowercase letters, digits, - and _. */
export const NodeName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9_-]+$/, 'node name may hold only a-z 0-9 _ -');

/** A host name reduced to a subject-safe node name. */
export function nodeNameFromHost(hostName: string): string {
  const safe = hostName
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64);
  return safe || 'node';
}

export const Empty = z.object({}).strict();

/** Largest page a list answers; a page also stops early to stay under the server's payload limit. */
export const LIST_MAX_LIMIT = 2000;

/**
 * A page of a list: `cursor` is the `next` of the previous page (absent: the first page). Lists
 * are paged so no reply passes the server's message limit however many containers a node runs.
 */
export const PageRequest = {
  cursor: z.string().min(1).max(4200).optional(),
  limit: z.number().int().min(1).max(LIST_MAX_LIMIT).optional(),
};
/** Present when more may follow: pass it back as `cursor`. */
export const NextCursor = z.string().optional();
export const Timestamp = z.string().datetime();

/** NATS requests and child processes need some bound: a day stands for none. */
export const UNBOUNDED_MS = 24 * 3600 * 1000;

/**
 * How long a service may work on a request, as the caller decides it (the gateway: from the RPC
 * the request serves): milliseconds, or 'unbounded' where that RPC's client never gives up.
 */
export const TimeLimit = z.union([z.number().int().min(1).max(UNBOUNDED_MS), z.literal('unbounded')]);
export type TimeLimit = z.infer<typeof TimeLimit>;

/** The limit as milliseconds, a day standing for none. */
export const limitMs = (limit: TimeLimit): number => (limit === 'unbounded' ? UNBOUNDED_MS : limit);
