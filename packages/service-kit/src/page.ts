/**
 * Paged lists: one place that cuts a sorted list into pages by a cursor, a count and the
 * server's payload limit, and one that reads every page back.
 */
import { LIST_MAX_LIMIT } from '@sysbox-mgr-ts/contracts';

/** Default page size; the byte bound usually ends a page first for big records. */
export const LIST_DEFAULT_LIMIT = 500;

/** Room left under a 1 MiB max_payload for headers and the reply's other fields. */
export const LIST_MAX_BYTES = 900 * 1024;

/**
 * The items whose key sorts after `cursor`, at most `limit` of them and at most `maxBytes` of
 * JSON; `next` is the last key given when more may follow.
 */
export function pageOf<T>(
  items: readonly T[],
  keyOf: (item: T) => string,
  req: { cursor?: string | undefined; limit?: number | undefined },
  maxBytes = LIST_MAX_BYTES,
): { items: T[]; next?: string } {
  const limit = Math.min(req.limit ?? LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT);
  const sorted = items
    .map((item) => ({ key: keyOf(item), item }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const after = req.cursor === undefined ? sorted : sorted.filter((x) => x.key > req.cursor!);
  const out: T[] = [];
  let bytes = 0;
  for (const { item } of after) {
    const size = Buffer.byteLength(JSON.stringify(item)) + 1;
    if (out.length >= limit || (out.length > 0 && bytes + size > maxBytes)) break;
    out.push(item);
    bytes += size;
  }
  const more = out.length < after.length;
  return more ? { items: out, next: keyOf(out.at(-1)!) } : { items: out };
}

/** Reads every page of a paged list, in order. */
export async function allPages<R extends { next?: string | undefined }>(
  page: (cursor: string | undefined) => Promise<R>,
): Promise<R[]> {
  const out: R[] = [];
  let cursor: string | undefined;
  do {
    const r = await page(cursor);
    out.push(r);
    cursor = r.next;
  } while (cursor !== undefined);
  return out;
}
