/**
 * What each identity may do on the bus, as nats-server 2.9 user permissions. Everything is an
 * allow-list: a subject not listed is refused by the server, for the raw protocol as much as for
 * a client library. The rules:
 * - a service subscribes only to its own subjects (so nobody else can answer in its place) and
 *   publishes only replies: through `allow_responses`, and to its callers' inboxes (a reply after
 *   a failover to another cluster member);
 * - a daemon's state is its own bucket: the JetStream API subjects that name that bucket's stream
 *   (info, create, get, a consumer to list it, deleting one message by its sequence: how a
 *   record is deleted without leaving a marker) and writes under its node's keys; never delete or
 *   purge a stream, never another stream;
 * - replies come back under the identity's own inbox prefix, which no other identity may
 *   subscribe to.
 */
import {
  GATEWAY_BUCKET,
  SERVICE_IDENTITIES,
  inboxPrefixOf,
  type IdentityName,
  type ServiceContract,
} from '@sysbox-mgr-ts/contracts';

export interface SubjectPermissions {
  allow: string[];
}

export interface UserPermissions {
  publish: SubjectPermissions;
  subscribe: SubjectPermissions;
  /** Lets a responder publish one reply to the reply subject of a request it received. */
  allow_responses?: boolean;
}

/**
 * The nodes an identity acts for: subject and key tokens. `*` means every node, for a cluster
 * whose hosts trust each other; otherwise a host's daemons can reach only their own node.
 */
export type NodeScope = readonly string[];

/** The JetStream API a daemon needs for its own KV bucket (see @nats-io/kv: create/open/get/put). */
export function bucketPermissions(bucket: string, nodes: NodeScope): string[] {
  const stream = `KV_${bucket}`;
  return [
    '$JS.API.INFO',
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.CREATE.${stream}`,
    `$JS.API.STREAM.UPDATE.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    // kv-state lists a bucket through one short-lived pull consumer on it (never another's).
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    // kv-state deletes a record by removing its message (a compare-and-set on its revision), so a
    // delete leaves nothing behind. One message per request, never a purge of the stream. The
    // server cannot scope it to a subject: on a cluster whose nodes' daemons have their own
    // identities, this reaches the other nodes' records in the same bucket (as reads already do).
    `$JS.API.STREAM.MSG.DELETE.${stream}`,
    ...nodes.map((node) => `$KV.${bucket}.${node}.>`),
  ];
}

/** Who may call a service: their inboxes are where its replies go. */
const CALLERS: readonly IdentityName[] = ['gateway', 'operator', 'monitor'];

function servicePermissions(identity: IdentityName, svc: ServiceContract, nodes: NodeScope): UserPermissions {
  return {
    publish: {
      allow: [
        ...bucketPermissions(svc.bucket, nodes),
        // allow_responses alone is not enough on a cluster: it is state of the connection a request
        // arrived on, so a reply sent after the service failed over to another member was refused
        // (measured: a lost reply, and a gateway call waiting out its bound). Callers' inboxes
        // are still theirs alone to subscribe to, and carry random tokens only requests reveal.
        ...CALLERS.map((caller) => `${inboxPrefixOf(caller)}.>`),
      ],
    },
    subscribe: {
      allow: [
        ...nodes.map((node) => `sysbox.${node}.${svc.service}.>`),
        // $SRV discovery: the generic verbs, and this service's own name (and instance ids).
        '$SRV.PING',
        '$SRV.INFO',
        '$SRV.STATS',
        `$SRV.*.${svc.name}`,
        `$SRV.*.${svc.name}.>`,
        `${inboxPrefixOf(identity)}.>`,
      ],
    },
    allow_responses: true,
  };
}

/** The subjects of every read-only operation (`list`, `summary`), for the monitor identity. */
export function readOnlySubjects(nodes: NodeScope): string[] {
  return Object.values(SERVICE_IDENTITIES).flatMap((svc) =>
    svc.contracts.filter((c) => c.readOnly).flatMap((c) => nodes.map((node) => c.subject(node))),
  );
}

export function permissionsFor(identity: IdentityName, nodes: NodeScope): UserPermissions {
  if (nodes.length === 0) throw new Error('permissions need at least one node (or "*")');
  switch (identity) {
    case 'gateway':
      return {
        publish: {
          allow: [
            ...bucketPermissions(GATEWAY_BUCKET, nodes),
            ...Object.values(SERVICE_IDENTITIES).flatMap((svc) =>
              nodes.map((node) => `sysbox.${node}.${svc.service}.>`),
            ),
            '$SRV.>',
          ],
        },
        subscribe: { allow: [`${inboxPrefixOf(identity)}.>`] },
      };
    case 'operator':
      // The NATS CLI as root: everything in the account, buckets included. Kept like root's keys.
      return { publish: { allow: ['>'] }, subscribe: { allow: ['>'] } };
    case 'monitor':
      return {
        publish: { allow: ['$SRV.>', ...readOnlySubjects(nodes)] },
        subscribe: { allow: [`${inboxPrefixOf(identity)}.>`] },
      };
    default:
      return servicePermissions(identity, SERVICE_IDENTITIES[identity], nodes);
  }
}

/**
 * What a leaf host answers from the hub: `$SRV` discovery (PING, INFO, STATS: read-only by the
 * protocol) and its own node's read-only subjects. Nothing else of the host is reachable from the
 * hub: no mutating subject, no bucket, no JetStream API.
 */
export function fleetSubjects(node: string): string[] {
  return ['$SRV.>', ...readOnlySubjects([node])];
}

/**
 * The hub's user for a leaf host's connection, written as nats-server reads leaf users: from the
 * leaf's side (`publish` is what the host may send into the hub, `subscribe` what the hub may
 * send to it). The host sends only replies to the monitor's inbox, so it can reach no other
 * host's subject through the hub; it receives only its own node's fleet subjects.
 */
export function leafPermissions(node: string): UserPermissions {
  return {
    publish: { allow: [`${inboxPrefixOf('monitor')}.>`] },
    subscribe: { allow: fleetSubjects(node) },
  };
}
