/**
 * A clone's mounts: its metacopy overlay, and its binds over the runtime's rootfs, upper and work
 * dirs (plus the bind-to-self), placed and lifted only where they are ours.
 */
import { rm, stat } from 'node:fs/promises';
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { mountsAt, mountsUnder, topMountAt, type MountEntry } from '@sysbox-mgr-ts/mountinfo';
import type { Mounter } from './mounter.js';
import type { CloneRecord } from './records.js';

export function isOverlayMounted(mounts: readonly MountEntry[], dir: string): boolean {
  return mountsAt(mounts, dir).some((m) => m.fsType === 'overlay');
}

/** The clone's overlay device, to tell our mounts on the original rootfs from the runtime's. */
export function cloneDevice(mounts: readonly MountEntry[], rec: CloneRecord): string | undefined {
  return topMountAt(mounts, rec.mergedDir)?.majorMinor;
}

/** True when `path` shows the root of `source`: our bind mount is on top there. */
export async function showsDir(path: string, source: string): Promise<boolean> {
  try {
    const [a, b] = await Promise.all([stat(path), stat(source)]);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

export interface CloneMounts {
  liftBinds(rec: CloneRecord): Promise<void>;
  placeBinds(rec: CloneRecord): Promise<void>;
  mountOverlay(rec: CloneRecord): Promise<void>;
  teardown(rec: CloneRecord): Promise<void>;
}

export function createCloneMounts(mounter: Mounter, readMounts: () => Promise<MountEntry[]>): CloneMounts {
  /** Unmounts our binds over the original dirs, only while ours are the topmost mounts there. */
  const liftBinds = async (rec: CloneRecord): Promise<void> => {
    for (const [target, source] of [
      [rec.origRootfs, rec.mergedDir],
      [rec.origUpperDir, rec.diffDir],
      [rec.origWorkDir, rec.workDir],
    ] as const) {
      // Bounded: the bind plus the bind-to-self is two; more means someone stacked copies.
      for (let i = 0; i < 8 && (await showsDir(target, source)); i++)
        await mounter.unmount(target, { lazy: true });
    }
  };

  /** Binds merged, diff and work over the original dirs (and the bind-to-self); all or nothing. */
  const placeBinds = async (rec: CloneRecord): Promise<void> => {
    const mounts = await readMounts();
    const dev = cloneDevice(mounts, rec);
    const ours = mountsAt(mounts, rec.origRootfs).filter((m) => m.majorMinor === dev).length;
    const steps: [string, string, boolean][] = [
      [rec.mergedDir, rec.origRootfs, ours === 0],
      [rec.diffDir, rec.origUpperDir, !(await showsDir(rec.origUpperDir, rec.diffDir))],
      [rec.workDir, rec.origWorkDir, !(await showsDir(rec.origWorkDir, rec.workDir))],
      [rec.origRootfs, rec.origRootfs, rec.bindToSelfActive && ours < 2],
    ];
    const done: string[] = [];
    try {
      for (const [source, target, needed] of steps) {
        if (!needed) continue;
        await mounter.rbind(source, target);
        done.push(target);
      }
    } catch (err) {
      for (const target of done.reverse())
        await mounter.unmount(target, { lazy: true }).catch(() => undefined);
      throw err;
    }
  };

  const mountOverlay = async (rec: CloneRecord): Promise<void> => {
    await mounter.overlay(rec.mergedDir, rec.mountOptions, rec.cwd);
    try {
      await mounter.setPropagation(rec.mergedDir, rec.propagation);
    } catch (err) {
      await mounter.unmount(rec.mergedDir, { lazy: true }).catch(() => undefined);
      throw err;
    }
  };

  /** Takes down everything the clone mounted; safe to call on a half-made clone. */
  const teardown = async (rec: CloneRecord): Promise<void> => {
    await liftBinds(rec);
    for (const m of mountsUnder(await readMounts(), rec.cloneDir))
      await mounter.unmount(m.mountPoint, { lazy: true });
    const left = mountsUnder(await readMounts(), rec.cloneDir);
    if (left.length > 0) {
      // Never rm -rf through a live overlay: it would write whiteouts, or worse, delete lower files.
      throw new SysboxError('internal', `clone ${rec.id}: ${left[0]!.mountPoint} is still mounted`);
    }
    await rm(rec.cloneDir, { recursive: true, force: true });
  };

  return { liftBinds, placeBinds, mountOverlay, teardown };
}
