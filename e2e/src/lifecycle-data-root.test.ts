/**
 * Issue #24: Docker's data-root moved in /etc/docker/daemon.json. The services read it (no
 * --allowed-rootfs-roots given), so a chown-mode container under it runs its whole lifecycle,
 * while a rootfs outside every declared root is still refused, naming the roots and the flag.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { connectGateway, type SysboxMgrClient } from './grpc.js';
import { startSystem, type System } from './harness.js';
import { newChownContainer, runStep, STEPS, type LifecycleOptions } from './lifecycle.js';
import { buildImage, mountsBelow, unmountAll } from './runtime.js';

describe('chown-mode container under a data-root moved in daemon.json', () => {
  let sys: System;
  let client: SysboxMgrClient;
  beforeAll(async () => {
    sys = await startSystem({
      rootfsRoots: 'daemon-json',
      args: { gateway: ['--disable-ovfs-on-idmapped-mount'] },
    });
    client = connectGateway(sys.socket);
  });
  afterAll(async () => {
    client?.close();
    await sys?.stop();
  });
  const showLogs = () => onTestFailed(() => void process.stderr.write(sys.logs()));

  it('runs every step with no --allowed-rootfs-roots', async () => {
    showLogs();
    const overlay2 = join(sys.dir, 'docker', 'overlay2');
    const o: LifecycleOptions = { client: () => client, overlay2, image: await buildImage(overlay2, 'img') };
    const c = await newChownContainer(o, 'moved-1');
    for (const step of STEPS) await runStep(o, c, step);
    expect(await mountsBelow(overlay2)).toEqual([]);
  });

  it('still refuses a rootfs outside every declared root, saying where each root came from', async () => {
    showLogs();
    const overlay2 = join(sys.dir, 'elsewhere', 'overlay2');
    const o: LifecycleOptions = { client: () => client, overlay2, image: await buildImage(overlay2, 'img') };
    const c = await newChownContainer(o, 'outside-1');
    const err = await runStep(o, c, 'create').catch((e: unknown) => e);
    await unmountAll(c.rootfs.merged); // as the runtime does when the create fails
    expect((err as Error).message).toMatch(/does not lie below an allowed rootfs root/);
    expect((err as Error).message).toContain(
      `${join(sys.dir, 'docker')} (data-root in ${join(sys.dir, 'etc', 'daemon.json')})`,
    );
    expect((err as Error).message).toContain('--allowed-rootfs-roots');
  });
});
