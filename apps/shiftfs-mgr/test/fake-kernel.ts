/**
 * Test double for the kernel side of shiftfs: a Mounter and a mountinfo reader that agree with
 * each other, so the reference counting runs end to end where the shiftfs module is absent.
 * It refuses to stack a second mark on a markpoint and to unmount what is not mounted, so a
 * double mount or a double unmount fails the test instead of passing silently.
 */
import { Writable } from 'node:stream';
import type { MountEntry } from '@sysbox-mgr-ts/mountinfo';
import { createLogger, type Logger } from '@sysbox-mgr-ts/service-kit';
import type { Mounter } from '../src/mounter.js';
import type { ShiftfsProbe } from '../src/probe.js';

/** The probe of a kernel where shiftfs is present and works, on overlayfs too. */
export const WORKING_SHIFTFS: ShiftfsProbe = {
  inKernel: true,
  supported: true,
  reason: 'fake kernel',
  onOverlayfs: { supported: true, reason: 'fake kernel' },
};

export class FakeKernel {
  /** markpoint -> source of every mark this fake made and has not unmounted. */
  readonly marks = new Map<string, string>();
  /** Paths where "someone else" mounted shiftfs. */
  readonly foreign = new Set<string>();
  readonly markCalls: { source: string; markpoint: string }[] = [];
  readonly unmountCalls: string[] = [];
  readonly failMarkOf = new Set<string>();
  readonly failUnmountOf = new Set<string>();
  delayMs = 0;

  readonly mounter: Mounter = {
    mark: async (source, markpoint) => {
      await this.pause();
      if (this.failMarkOf.has(source)) throw new Error(`fake: mark of ${source} fails`);
      if (this.marks.has(markpoint)) throw new Error(`fake: ${markpoint} is already marked (double mount)`);
      this.markCalls.push({ source, markpoint });
      this.marks.set(markpoint, source);
    },
    unmount: async (markpoint) => {
      await this.pause();
      if (this.failUnmountOf.has(markpoint)) throw new Error(`fake: unmount of ${markpoint} fails`);
      if (!this.marks.delete(markpoint)) throw new Error(`fake: ${markpoint} is not mounted`);
      this.unmountCalls.push(markpoint);
    },
  };

  readonly readMounts = async (): Promise<MountEntry[]> => {
    const entry = (mountPoint: string, source: string, i: number): MountEntry => ({
      mountId: 1000 + i,
      parentId: 1,
      majorMinor: '0:99',
      root: '/',
      mountPoint,
      mountOptions: ['rw'],
      optionalFields: [],
      fsType: 'shiftfs',
      source,
      superOptions: ['rw', 'mark'],
    });
    const ours = [...this.marks].map(([mp, src], i) => entry(mp, src, i));
    const theirs = [...this.foreign].map((p, i) => entry(p, p, 500 + i));
    return [...ours, ...theirs];
  };

  private pause(): Promise<void> {
    return this.delayMs > 0 ? new Promise((r) => setTimeout(r, this.delayMs)) : Promise.resolve();
  }
}

/** A logger whose JSON lines tests can read back. */
export function captureLogger(): { log: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const log = createLogger({
    service: 'shiftfs-test',
    node: 'test',
    version: '0',
    level: 'debug',
    destination,
  });
  return {
    log,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
