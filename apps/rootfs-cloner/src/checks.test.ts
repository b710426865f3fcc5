import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import type { HostGuard } from '@sysbox-mgr-ts/host-guard';
import { recordedRuntimeDirsAllowed } from './checks.js';
import type { CloneRecord } from './records.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A record whose runtime dirs are one existing dir; the guard runs `onCheck` when asked about it. */
async function rig(onCheck: (path: string) => Promise<string>) {
  const dir = await mkdtemp(join(tmpdir(), 'cloner-checks-'));
  dirs.push(dir);
  const rec = {
    id: 'c1',
    origRootfs: dir,
    origUpperDir: join(dir, 'missing-upper'),
    origWorkDir: join(dir, 'missing-work'),
    lowerDirs: [],
  } as unknown as CloneRecord;
  const guard = { allowedRootfs: (path: string) => onCheck(path) } as unknown as HostGuard;
  return { dir, rec, guard };
}

describe('recorded runtime dirs', () => {
  it('passes a dir the runtime deleted between the existence check and the guard', async () => {
    const { rec, guard } = await rig(async (path) => {
      await rm(path, { recursive: true, force: true });
      throw new SysboxError('not-found', `recorded rootfs ${path} does not exist`);
    });
    await expect(recordedRuntimeDirsAllowed(guard, rec)).resolves.toBeUndefined();
  });

  it('keeps a not-found for a dir that is still there', async () => {
    const { rec, guard } = await rig(async (path) => {
      throw new SysboxError('not-found', `recorded rootfs ${path} does not exist`);
    });
    await expect(recordedRuntimeDirsAllowed(guard, rec)).rejects.toMatchObject({ code: 'not-found' });
  });

  it('keeps a refusal of a dir outside the allowed roots', async () => {
    const { rec, guard } = await rig(async (path) => {
      throw new SysboxError('invalid-request', `${path} lies outside every allowed root`);
    });
    await expect(recordedRuntimeDirsAllowed(guard, rec)).rejects.toMatchObject({ code: 'invalid-request' });
  });

  it('asks nothing about dirs that are gone', async () => {
    const asked: string[] = [];
    const { dir, rec, guard } = await rig(async (path) => {
      asked.push(path);
      return path;
    });
    await recordedRuntimeDirsAllowed(guard, rec);
    expect(asked).toEqual([dir]);
  });
});
