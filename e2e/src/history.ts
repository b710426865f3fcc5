/**
 * A host with history (#25): many short container lifecycles through the whole system (Register,
 * SubidAlloc, Update, ReqMounts with a docker volume, Unregister, then Docker's removal of the
 * container dir, which the gateway's removal watch turns into the release of everything), beside
 * a set of live containers that stay. The soak test and the soak bench both drive it, and read
 * what the buckets hold: messages, bytes and subjects (a list reads the last message of every
 * subject under its prefix, and every daemon's start-up reads its tables through lists).
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { GATEWAY_BUCKET, SERVICE_IDENTITIES } from '@sysbox-mgr-ts/contracts';
import { connectGateway, rpc, type SysboxMgrClient } from './grpc.js';
import type { System } from './harness.js';
import { SHIFT } from './lifecycle.js';
import { until } from './runtime.js';

/** The buckets of the system: the gateway's and each service's. */
export const BUCKETS = [GATEWAY_BUCKET, ...Object.values(SERVICE_IDENTITIES).map((s) => s.bucket)];

export interface BucketCounts {
  bucket: string;
  messages: number;
  bytes: number;
  /** Distinct keys in the stream: what a list (and keys()) reads, live or deleted. */
  subjects: number;
}

export interface HistoryRig {
  client: SysboxMgrClient;
  /** Starts a container and leaves it running. */
  startLive(id: string): Promise<void>;
  /** `n` whole lifecycles, `concurrency` at a time, ids `<prefix>-<i>`. */
  lifecycles(prefix: string, n: number, concurrency: number): Promise<void>;
  counts(): Promise<BucketCounts[]>;
  close(): void;
}

/** Options of the gateway this rig needs: chown mode (no ID-mapped overlay probe on this host). */
export const HISTORY_GATEWAY_ARGS = ['--disable-ovfs-on-idmapped-mount'];

export function historyRig(sys: System): HistoryRig {
  const client = connectGateway(sys.socket);
  const overlay2 = join(sys.dir, 'docker', 'overlay2');
  // Docker's layout without the overlay mount: `<overlay2>/<id>/merged`, watched at `<overlay2>/<id>`.
  const rootfsOf = (id: string) => join(overlay2, id, 'merged');

  const start = async (id: string): Promise<void> => {
    await mkdir(rootfsOf(id), { recursive: true });
    await rpc(client, 'Register', {
      id,
      rootfs: rootfsOf(id),
      userns: '',
      netns: '',
      uidMappings: [],
      gidMappings: [],
    });
    const ids = await rpc<{ uid: number; gid: number }>(client, 'SubidAlloc', { id, size: 65536 });
    await rpc(client, 'Update', {
      id,
      userns: '',
      netns: '',
      uidMappings: [{ containerID: 0, hostID: ids.uid, size: 65536 }],
      gidMappings: [{ containerID: 0, hostID: ids.gid, size: 65536 }],
      rootfsUidShiftType: SHIFT.chown,
    });
    await rpc(client, 'ReqMounts', {
      id,
      rootfsUidShiftType: SHIFT.chown,
      reqList: [{ kind: 0, dest: '/var/lib/docker' }],
    });
  };

  const stopAndRemove = async (id: string): Promise<void> => {
    await rpc(client, 'Unregister', { id });
    await rm(join(overlay2, id), { recursive: true, force: true });
    // Released: the gateway forgot the container (its record is gone).
    await until(`release of ${id}`, async () => !(await isKnown(id)), 30_000);
  };

  /** Whether the gateway's table still holds `id`, read from its bucket as an operator would. */
  const isKnown = async (id: string): Promise<boolean> => {
    const jsm = await jetstreamManager(sys.nc);
    const m = await jsm.streams
      .getMessage(`KV_${GATEWAY_BUCKET}`, {
        last_by_subj: `$KV.${GATEWAY_BUCKET}.${sys.node}.containers.${id}`,
      })
      .catch(() => undefined);
    return m != null && !m.header?.get('KV-Operation');
  };

  return {
    client,
    startLive: start,
    async lifecycles(prefix, n, concurrency) {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < n) {
          const id = `${prefix}-${next++}`;
          await start(id);
          await stopAndRemove(id);
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
    },
    async counts() {
      const jsm = await jetstreamManager(sys.nc);
      const out: BucketCounts[] = [];
      for (const bucket of BUCKETS) {
        const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: '>' });
        out.push({
          bucket,
          messages: info.state.messages,
          bytes: info.state.bytes,
          subjects: Object.keys(info.state.subjects ?? {}).length,
        });
      }
      return out;
    },
    close: () => client.close(),
  };
}
