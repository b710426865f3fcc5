/**
 * The vol service end to end as root: real overlay rootfs, real rsync, a real nats-server with
 * JetStream for state, requests through the NATS client: vol.prep and vol.revert-prep on real source trees.
 */
import { mkdir, mkdtemp, stat, writeFile, chown, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { volList, volPrep, volRevertPrep } from '@sysbox-mgr-ts/contracts';
import { describe, expect, it } from 'vitest';
import { snapshotTree } from '../test/tree.js';
import { OFFSET, useVolMgrRig } from '../test/vol-mgr-rig.js';
describe('vol-mgr on a real nats-server with real mounts (root)', () => {
  const rig = useVolMgrRig();
  const { capture, start } = rig;

  it('prep shifts mismatched sources once, shares an exclusive source with a warning, revert-prep restores the exact owners', async () => {
    await start();
    const src = await mkdtemp(join(rig.base, 'src-'));
    await mkdir(join(src, 'sub'));
    await writeFile(join(src, 'sub/a'), 'a');
    await chown(join(src, 'sub/a'), 1000, 1001);
    await writeFile(join(src, 'b'), 'b');
    await chmod(join(src, 'b'), 0o4755);
    const owned = await mkdtemp(join(rig.base, 'owned-'));
    await chown(owned, OFFSET, OFFSET);
    const original = await snapshotTree(src);
    const req = (id: string) => ({
      id,
      uid: OFFSET,
      gid: OFFSET,
      sources: [
        { source: src, exclusive: true },
        { source: owned, exclusive: false },
      ],
    });

    expect(await rig.client.call(volPrep, req('ca'))).toEqual({ prepared: [src], skipped: [owned] });
    expect(await snapshotTree(src, OFFSET)).toEqual(original);
    expect((await stat(join(src, 'b'))).mode & 0o7777).toBe(0o4755);

    capture.lines.length = 0;
    expect(await rig.client.call(volPrep, req('cb'))).toEqual({ prepared: [], skipped: [src, owned] });
    expect(
      capture.lines.some(
        (l) =>
          l.level === 40 &&
          String(l.msg).includes('ca') &&
          String(l.msg).includes('cb') &&
          String(l.msg).includes(src),
      ),
    ).toBe(true);
    expect(await snapshotTree(src, OFFSET)).toEqual(original);
    const preps = (await rig.client.call(volList, {})).preps;
    expect(preps.find((p) => p.source === src)).toMatchObject({
      id: 'ca',
      holders: ['ca', 'cb'],
      uidOffset: OFFSET,
      gidOffset: OFFSET,
      exclusive: true,
    });

    // The first container leaves while the second still uses the source: nothing moves.
    expect(await rig.client.call(volRevertPrep, { id: 'ca' })).toEqual({ reverted: [] });
    expect(await snapshotTree(src, OFFSET)).toEqual(original);
    expect(await rig.client.call(volRevertPrep, { id: 'cb' })).toEqual({ reverted: [src] });
    expect(await snapshotTree(src)).toEqual(original);
    expect((await stat(owned)).uid).toBe(OFFSET);
    expect((await rig.client.call(volList, {})).preps).toEqual([]);
  });
});
