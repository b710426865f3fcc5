/**
 * The cloner against real overlay mounts (root in a VM) and a real nats-server for its state:
 * shift and revert an upper dir.
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { shift } from '@sysbox-mgr-ts/id-shift';
import { owners } from '../test/rootfs.js';
import { OFFSET, useClonerRig } from '../test/cloner-rig.js';
describe('rootfs cloner on real overlay mounts', () => {
  const rig = useClonerRig();
  const { makeCloner, setup } = rig;

  it('shift-upper chowns an upper dir (or only records a runtime chown), revert-upper restores it, both survive a restart', async () => {
    await setup();
    const upper = join(rig.base, 'idmapped-upper');
    await mkdir(join(upper, 'etc'), { recursive: true });
    await writeFile(join(upper, 'etc', 'motd'), 'hi');
    const before = await owners(upper);

    const first = await makeCloner();
    await first.shiftUpper('u1', upper, OFFSET, OFFSET);
    expect((await stat(join(upper, 'etc', 'motd'))).uid).toBe(OFFSET);
    // The same shift again changes nothing; another one is refused.
    await first.shiftUpper('u1', upper, OFFSET, OFFSET);
    expect((await stat(join(upper, 'etc', 'motd'))).uid).toBe(OFFSET);
    await expect(first.shiftUpper('u1', upper, OFFSET + 65536, OFFSET + 65536)).rejects.toMatchObject({
      code: 'already-exists',
    });
    expect((await first.list()).uppers).toEqual([
      { id: 'u1', upperDir: upper, uidOffset: OFFSET, gidOffset: OFFSET, shifted: true },
    ]);

    // A restarted daemon knows the upper is shifted and reverts it exactly once.
    const second = await makeCloner();
    await second.revertUpper('u1');
    expect(await owners(upper)).toEqual(before);
    await second.revertUpper('u1');
    expect(await owners(upper)).toEqual(before);
    expect((await second.list()).uppers).toEqual([]);

    // The runtime chowned it itself: recorded, not shifted twice; the revert undoes the runtime's chown.
    await shift(upper, OFFSET, OFFSET);
    const chowned = await owners(upper);
    await second.shiftUpper('u1', upper, OFFSET, OFFSET, true);
    expect(await owners(upper)).toEqual(chowned);
    await second.revertUpper('u1');
    expect(await owners(upper)).toEqual(before);

    await expect(second.shiftUpper('u2', join(rig.base, 'no-such-upper'), 1, 1)).rejects.toMatchObject({
      code: 'invalid-request',
    });
    expect((await second.list()).uppers).toEqual([]);
  });
});
