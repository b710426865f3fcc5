import { z } from 'zod';
import { ContainerId, Empty, Id, Timestamp } from './common.js';
import { defineContract, subjectOf, type ServiceContract } from './contract.js';

export const SUBID_BLOCK = 65536;
export const MAX_SUBID_SIZE = 2 ** 32;

export const SubidRange = z.object({ uid: Id, gid: Id, size: z.number().int().min(1).max(MAX_SUBID_SIZE) });
export type SubidRange = z.infer<typeof SubidRange>;

export const subidAlloc = defineContract({
  service: 'subid',
  endpoint: 'alloc',
  idempotent: true,
  subject: subjectOf('subid', 'alloc'),
  description: 'allocate a subordinate uid/gid range for a container (same answer for the same id)',
  request: z.object({ id: ContainerId, size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }),
  reply: z.object({ uid: Id, gid: Id, size: z.number().int() }),
  errors: ['invalid-request', 'invalid-size', 'exhausted'],
});

export const subidFree = defineContract({
  service: 'subid',
  endpoint: 'free',
  idempotent: true,
  subject: subjectOf('subid', 'free'),
  description: "release a container's range",
  request: z.object({ id: ContainerId }),
  reply: Empty,
  errors: ['invalid-request', 'not-found'],
});

export const SubidAllocation = SubidRange.extend({ id: ContainerId, allocatedAt: Timestamp });
export type SubidAllocation = z.infer<typeof SubidAllocation>;

/**
 * A list page holds at most this many allocations. At 128-character ids an allocation encodes to
 * about 230 bytes, so the largest page stays near 460 KiB, under the 1 MiB max_payload with
 * room to spare; the allocator also stops a page early at the server's max_payload.
 */
export const SUBID_LIST_MAX_LIMIT = 2000;
export const SUBID_LIST_DEFAULT_LIMIT = 1000;

export const subidList = defineContract({
  service: 'subid',
  endpoint: 'list',
  readOnly: true,
  subject: subjectOf('subid', 'list'),
  description: "this node's allocations by container id, a page at a time, with the mode and pool",
  request: z
    .object({
      /** The `next` of the previous page; absent for the first page. */
      cursor: ContainerId.optional(),
      limit: z.number().int().min(1).max(SUBID_LIST_MAX_LIMIT).optional(),
    })
    .strict(),
  reply: z.object({
    mode: z.enum(['shared', 'exclusive']),
    pool: SubidRange,
    allocations: z.array(SubidAllocation),
    /** Present when more allocations may follow: pass it as `cursor` to get the next page. */
    next: ContainerId.optional(),
  }),
  errors: ['invalid-request'],
});

/**
 * Counts only, for an inventory of many nodes: from the stores' keys (one request each, no record
 * read), so its cost does not grow with what the records hold.
 */
export const subidSummary = defineContract({
  service: 'subid',
  endpoint: 'summary',
  readOnly: true,
  subject: subjectOf('subid', 'summary'),
  description: "this node's mode, pool and how many allocations it holds (counts, no record read)",
  request: Empty,
  reply: z.object({
    mode: z.enum(['shared', 'exclusive']),
    pool: SubidRange,
    /**
     * Container ids with an allocation record, from its keys: one whose alloc is still in flight
     * counts too (`list`, which reads each record, shows claimed ones only).
     */
    allocations: z.number().int().min(0),
    /** Exclusive mode: ids in claimed blocks (65,536 a block); absent in shared mode. */
    idsClaimed: z.number().int().min(0).optional(),
  }),
  errors: ['invalid-request'],
});

export const subidService = {
  service: 'subid',
  name: 'sysbox-subid',
  bucket: 'sysbox-subid',
  description: 'subordinate uid/gid ranges for system containers',
  contracts: [subidAlloc, subidFree, subidList, subidSummary],
} as const satisfies ServiceContract;

export type SubidAllocRequest = z.infer<typeof subidAlloc.request>;
export type SubidAllocReply = z.infer<typeof subidAlloc.reply>;
export type SubidListRequest = z.infer<typeof subidList.request>;
export type SubidListReply = z.infer<typeof subidList.reply>;
export type SubidSummaryReply = z.infer<typeof subidSummary.reply>;

/** The seed interface (upstream intf.SubidAlloc). */
export interface SubidAlloc {
  alloc(id: string, size: number): Promise<SubidAllocReply>;
  free(id: string): Promise<void>;
  /** One page, in container id order; without a cursor, the first. */
  list(page?: SubidListRequest): Promise<SubidListReply>;
}
