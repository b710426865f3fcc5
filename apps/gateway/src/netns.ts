/**
 * Network-namespace sharing (upstream netnsTable): who joined which netns, by inode, in order, in
 * the store so it survives restarts. Containers sharing a netns (a pod) share the first one's
 * user namespace and id maps.
 */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type StateStore } from '@sysbox-mgr-ts/kv-state';
import type { HostChecks } from './probes.js';
import type { ContainerRecord } from './record.js';
import type { ContainerTable } from './table.js';

/** Who shares a network namespace, in the order they joined it. */
export interface NetnsMembers {
  ids: string[];
}

export interface NetnsSharing {
  /** Adds the container to the netns's members; answers the members after. */
  track(id: string, inode: number): Promise<string[]>;
  /** Takes the container out; the last one out deletes the entry. Inode 0 (none) does nothing. */
  untrack(id: string, inode: number): Promise<void>;
  /**
   * Register: joins the record (its `netns` and `userns` set from the request) to its netns and,
   * when others are there and no userns was given, copies the first member's userns and maps.
   */
  onRegister(rec: ContainerRecord): Promise<void>;
  /** Update: a container registered without a netns joins the one it now names. */
  onUpdate(rec: ContainerRecord, netns: string): Promise<void>;
}

export function createNetnsSharing(deps: {
  store: StateStore<NetnsMembers>;
  table: Pick<ContainerTable, 'get'>;
  host: Pick<HostChecks, 'inodeOf'>;
}): NetnsSharing {
  const { store, table, host } = deps;

  async function inodeOf(id: string, netns: string): Promise<number> {
    try {
      return await host.inodeOf(netns);
    } catch (err) {
      throw new SysboxError(
        'invalid-request',
        `container ${id}: unable to get inode for netns ${netns}: ${(err as Error).message}`,
      );
    }
  }

  const sharing: NetnsSharing = {
    async track(id, inode) {
      const after = await store.mutate(String(inode), (cur) => {
        const ids = cur?.ids ?? [];
        return ids.includes(id) ? undefined : { ids: [...ids, id] };
      });
      return after?.ids ?? [id];
    },

    async untrack(id, inode) {
      if (inode === 0) return;
      await store.mutate(String(inode), (cur) => {
        if (!cur?.ids.includes(id)) return undefined;
        const ids = cur.ids.filter((x) => x !== id);
        return ids.length === 0 ? REMOVE : { ids };
      });
    },

    async onRegister(rec) {
      if (rec.netns === '') return;
      const inode = await inodeOf(rec.id, rec.netns);
      const members = await sharing.track(rec.id, inode);
      rec.netnsInode = inode;
      if (members.length > 1 && rec.userns === '') {
        const first = members[0] === rec.id ? undefined : await table.get(members[0]!);
        if (!first) {
          throw new SysboxError(
            'failed-precondition',
            `container ${rec.id} shares net-ns with other containers, but unable to find info for those`,
          );
        }
        rec.userns = first.userns;
        rec.uidMappings = first.uidMappings;
        rec.gidMappings = first.gidMappings;
      }
    },

    async onUpdate(rec, netns) {
      if (rec.netns !== '' || netns === '') return;
      const inode = await inodeOf(rec.id, netns);
      await sharing.track(rec.id, inode);
      rec.netns = netns;
      rec.netnsInode = inode;
    },
  };
  return sharing;
}
