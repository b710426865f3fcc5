/** The rootfs service's handlers as data: one binding per contract, over an injected cloner. */
import {
  rootfsChownClone,
  rootfsContainerStopped,
  rootfsCreateClone,
  rootfsList,
  rootfsRemoveAll,
  rootfsRemoveClone,
  rootfsRevertChown,
  rootfsRevertUpper,
  rootfsShiftUpper,
  rootfsSummary,
} from '@sysbox-mgr-ts/contracts';
import { handle, pageOf, type Binding } from '@sysbox-mgr-ts/service-kit';
import type { Cloner } from './cloner.js';

export function createBindings(cloner: Cloner): Binding[] {
  return [
    handle(rootfsCreateClone, (req) => cloner.createClone(req.id, req.origRootfs)),
    handle(rootfsRemoveClone, async (req) => {
      await cloner.removeClone(req.id);
      return {};
    }),
    handle(rootfsChownClone, async (req) => {
      await cloner.chownClone(req.id, req.uidOffset, req.gidOffset);
      return {};
    }),
    handle(rootfsRevertChown, async (req) => {
      await cloner.revertChown(req.id);
      return {};
    }),
    handle(rootfsContainerStopped, async (req) => {
      await cloner.containerStopped(req.id);
      return {};
    }),
    handle(rootfsRemoveAll, () => cloner.removeAll()),
    handle(rootfsShiftUpper, async (req) => {
      await cloner.shiftUpper(req.id, req.upperDir, req.uidOffset, req.gidOffset, req.alreadyShifted);
      return {};
    }),
    handle(rootfsRevertUpper, async (req) => {
      await cloner.revertUpper(req.id);
      return {};
    }),
    handle(rootfsList, async (req) => {
      const { clones, uppers } = await cloner.list();
      const entries = [
        ...clones.map((clone) => ({ key: `c/${clone.id}`, clone })),
        ...uppers.map((upper) => ({ key: `u/${upper.id}`, upper })),
      ];
      const page = pageOf(entries, (e) => e.key, req);
      return {
        clones: page.items.flatMap((e) => ('clone' in e ? [e.clone] : [])),
        uppers: page.items.flatMap((e) => ('upper' in e ? [e.upper] : [])),
        next: page.next,
      };
    }),
    handle(rootfsSummary, () => cloner.summary()),
  ];
}
