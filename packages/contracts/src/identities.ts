/**
 * Who talks on the bus. Each daemon connects as its own identity, and the NATS permissions of that
 * identity (packages/nats-auth) come from this table: the subjects a service serves and the bucket
 * it owns are those of its contract, so a new subject or bucket gets its permission by being here.
 */
import type { ServiceContract } from './contract.js';
import { rootfsService } from './rootfs.js';
import { shiftfsService } from './shiftfs.js';
import { subidService } from './subid.js';
import { volService } from './vol.js';

/** The gateway's container table. */
export const GATEWAY_BUCKET = 'sysbox-gateway';

/** Each service daemon (the app's directory name) and the contract it serves. */
export const SERVICE_IDENTITIES = {
  'subid-allocator': subidService,
  'vol-mgr': volService,
  'shiftfs-mgr': shiftfsService,
  'rootfs-cloner': rootfsService,
} as const satisfies Record<string, ServiceContract>;

export type ServiceIdentity = keyof typeof SERVICE_IDENTITIES;
/** Daemons, plus `operator` (everything, for the NATS CLI) and `monitor` (discovery and read-only subjects). */
export type IdentityName = ServiceIdentity | 'gateway' | 'operator' | 'monitor';
export const IDENTITY_NAMES: readonly IdentityName[] = [
  ...(Object.keys(SERVICE_IDENTITIES) as ServiceIdentity[]),
  'gateway',
  'operator',
  'monitor',
];

/**
 * Replies to an identity's requests arrive under this prefix, and only that identity may subscribe
 * to it: nobody else can read its replies. (The NATS CLI takes it as `--inbox-prefix`.)
 */
export function inboxPrefixOf(identity: IdentityName): string {
  return `_INBOX_${identity}`;
}
