import { z } from 'zod';
import type { ServiceContract } from './contract.js';
import { rootfsService } from './rootfs.js';
import { shiftfsService } from './shiftfs.js';
import { subidService } from './subid.js';
import { volService } from './vol.js';

export const ALL_SERVICES: readonly ServiceContract[] = [
  subidService,
  volService,
  shiftfsService,
  rootfsService,
];

/**
 * One JSON Schema document per subject (node shown as `{node}`), for operators and non-TS clients.
 * Keys are file names under schemas/.
 */
export function jsonSchemas(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const svc of ALL_SERVICES) {
    for (const c of svc.contracts) {
      const subject = c.subject('{node}');
      out[`${subject.replace(/^sysbox\.\{node\}\./, '')}.json`] = {
        $schema: 'https://json-schema.org/draft/2020-12/schema',
        title: subject,
        description: c.description,
        service: svc.name,
        endpoint: c.endpoint,
        errors: c.errors,
        request: z.toJSONSchema(c.request, { io: 'input', unrepresentable: 'any' }),
        reply: z.toJSONSchema(c.reply, { io: 'output', unrepresentable: 'any' }),
      };
    }
  }
  return out;
}
