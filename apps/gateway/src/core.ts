/**
 * The gateway's state and what acts on it, built once: the container table over its store, the
 * service caller and executor, netns sharing, the volume calls, the boot settle, removal and the
 * manager, each handed the one table. gateway.ts adds the network around it (KV, the watcher, the
 * orphan collector, the gRPC server); tests build it over memory stores and fake services.
 */
import { readBootId, type KvStateStore, type StateStore } from '@sysbox-mgr-ts/kv-state';
import type { Logger, ServiceClient } from '@sysbox-mgr-ts/service-kit';
import { createBootSettle, type BootSettle } from './boot-settle.js';
import type { MgrConfig } from './container-config.js';
import { createExecutor } from './executor.js';
import { createManager, type Manager } from './manager.js';
import { createNetnsSharing, type NetnsMembers, type NetnsSharing } from './netns.js';
import type { HostChecks, HostFacts } from './probes.js';
import type { ContainerRecord } from './record.js';
import { createRemoval } from './removal.js';
import { createReplyChecks, type ReplyCheckOptions, type ReplyChecks } from './reply-checks.js';
import { serviceCaller, type ServiceCall } from './service-call.js';
import { createContainerTable, type ContainerTable } from './table.js';
import { createVolumePolicy } from './volumes.js';

export interface CoreDeps {
  services: ServiceClient;
  containers: KvStateStore<ContainerRecord>;
  netns: StateStore<NetnsMembers>;
  host: HostChecks;
  facts: HostFacts;
  config: MgrConfig;
  timeouts: { opMs: number; longOpMs: number };
  clock: () => Date;
  log: Logger;
  /**
   * What service replies are checked against before sysbox-runc sees them: volume mounts must be
   * vol-mgr's dirs under the data root, subid ranges must be delegated in the subid files.
   */
  replyChecks: ReplyCheckOptions;
  /** Whether the container runtime removes the container when it stops (Docker's `--rm`). */
  autoRemove?: (id: string) => Promise<boolean>;
  /** The kernel's boot id, stamped on records (boot.ts); read from /proc when left out. */
  bootId?: string;
}

export interface Core {
  table: ContainerTable;
  call: ServiceCall;
  checks: ReplyChecks;
  netns: NetnsSharing;
  manager: Manager;
  /** Releases everything of a stopped container and forgets it (removal.ts). */
  removeContainer(id: string): Promise<boolean>;
  settleBoot: BootSettle;
  bootId: string;
}

export function createCore(deps: CoreDeps): Core {
  const { host, log } = deps;
  const table = createContainerTable(deps.containers, deps.clock);
  const call = serviceCaller(deps.services, deps.timeouts);
  const exec = createExecutor(call, table, log);
  const checks = createReplyChecks(deps.replyChecks, log);
  const netns = createNetnsSharing({ store: deps.netns, table, host });
  const volumes = createVolumePolicy({ call, checks, noInnerImgPreload: deps.config.noInnerImgPreload, log });
  const bootId = deps.bootId ?? readBootId();
  const settleBoot = createBootSettle({ table, call, netns, bootId, log });
  const manager = createManager({
    table,
    exec,
    netns,
    volumes,
    checks,
    host,
    facts: deps.facts,
    config: deps.config,
    settleBoot,
    bootId,
    log,
    autoRemove: deps.autoRemove,
  });
  const removeContainer = createRemoval({ table, call, netns, log });
  return { table, call, checks, netns, manager, removeContainer, settleBoot, bootId };
}
