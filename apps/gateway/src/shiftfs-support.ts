/**
 * Whether shiftfs works is shiftfs-mgr's finding: asked at start, and in the background
 * (background-retry.ts) until it answers.
 */
import { shiftfsList } from '@sysbox-mgr-ts/contracts';
import type { ServiceClient } from '@sysbox-mgr-ts/service-kit';

/** What shiftfs-mgr found at its start (its functional checks, as upstream's manager ran them). */
export interface ShiftfsSupport {
  /** The kernel has shiftfs: what --disable-shiftfs-precheck trusts. */
  inKernel: boolean;
  supported: boolean;
  supportedOnOverlayfs: boolean;
  reason?: string;
  reasonOnOverlayfs?: string;
}

/**
 * shiftfs-mgr's answer, or undefined when none came within timeoutMs (not running, not yet
 * started). A shiftfs-mgr 0.1 reply has `supported` only: overlayfs support is then not known, so no.
 */
export async function askShiftfsSupport(
  services: ServiceClient,
  timeoutMs: number,
): Promise<ShiftfsSupport | undefined> {
  try {
    const r = await services.call(shiftfsList, { limit: 1 }, { timeoutMs });
    return {
      inKernel: r.inKernel ?? r.supported,
      supported: r.supported,
      supportedOnOverlayfs: r.supportedOnOverlayfs ?? false,
      ...(r.reason === undefined ? {} : { reason: r.reason }),
      ...(r.reasonOnOverlayfs === undefined ? {} : { reasonOnOverlayfs: r.reasonOnOverlayfs }),
    };
  } catch {
    return undefined;
  }
}
