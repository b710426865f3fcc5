/**
 * The real kernel path: runs where /proc/filesystems lists shiftfs (Ubuntu kernels with the
 * module) and is skipped elsewhere with the probe's reason in the test name.
 */
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountsAt, readMountInfo } from '@sysbox-mgr-ts/mountinfo';
import { useNatsServer } from '@sysbox-mgr-ts/test-nats/vitest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openMarkStore } from './mark-store.js';
import { createShiftfsMarks } from './marks.js';
import { createShiftfsMounter } from './mounter.js';
import { listsShiftfs, probeShiftfs } from './probe.js';
import { captureLogger } from '../test/fake-kernel.js';

const hostHasShiftfs = listsShiftfs(await readFile('/proc/filesystems', 'utf8'));
const SKIP_REASON = '/proc/filesystems does not list shiftfs on this kernel';
if (!hostHasShiftfs) process.stderr.write(`real shiftfs mount tests skipped: ${SKIP_REASON}\n`);
const log = captureLogger().log;

async function shiftfsMountsUnder(dir: string): Promise<string[]> {
  return (await readMountInfo())
    .filter((m) => m.fsType === 'shiftfs' && m.mountPoint.startsWith(dir))
    .map((m) => m.mountPoint);
}

describe('shiftfs on the real kernel', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shiftfsmgr-real-'));
    await mkdir(join(dir, 'src'));
    await mkdir(join(dir, 'mp'));
  });
  afterEach(async () => {
    // Whatever a failed test left mounted goes before the dir does.
    for (const mp of (await readMountInfo()).filter((m) => m.mountPoint.startsWith(dir)).reverse()) {
      await createShiftfsMounter(log)
        .unmount(mp.mountPoint)
        .catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(hostHasShiftfs)('without the module, the real mounter fails and leaves no mount', async () => {
    await expect(createShiftfsMounter(log).mark(join(dir, 'src'), join(dir, 'mp'))).rejects.toMatchObject({
      name: 'SysboxError',
      message: expect.stringMatching(/shiftfs/),
    });
    expect(mountsAt(await readMountInfo(), join(dir, 'mp'))).toEqual([]);
  });

  describe.skipIf(!hostHasShiftfs)(
    `marks and unmarks with the module${hostHasShiftfs ? '' : ` (skipped: ${SKIP_REASON})`}`,
    () => {
      const nats = useNatsServer();

      it('two holders share one real mark; the last unmark removes mount and markpoint', async () => {
        const marks = await createShiftfsMarks({
          store: await openMarkStore(nats.nc, { node: 'real', bucket: 'sysbox-shiftfs-real' }),
          mounter: createShiftfsMounter(log),
          readMounts: () => readMountInfo(),
          workDir: join(dir, 'data', 'shiftfs'),
          dataRoot: join(dir, 'data'),
          probe: await probeShiftfs({ modprobe: true, precheck: true, checkDir: dir, log }),
          log,
        });
        const [m] = await marks.mark('c1', [{ source: join(dir, 'src'), readonly: false }], true);
        await marks.mark('c2', [{ source: join(dir, 'src'), readonly: false }], true);
        expect(await shiftfsMountsUnder(dir)).toEqual([m!.source]);
        await marks.unmark('c1', [m!]);
        expect(await shiftfsMountsUnder(dir)).toEqual([m!.source]);
        await marks.unmark('c2', [m!]);
        expect(await shiftfsMountsUnder(dir)).toEqual([]);
        await expect(stat(m!.source)).rejects.toMatchObject({ code: 'ENOENT' });
      });
    },
  );
});
