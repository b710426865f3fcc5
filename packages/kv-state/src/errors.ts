/** How the store's failures are told apart: a CAS conflict, a full bucket, JetStream unavailable. */
import { JetStreamApiError } from '@nats-io/jetstream';
import { SysboxError } from '@sysbox-mgr-ts/contracts';

/** A write whose answer was lost, read back and found overwritten by someone else. */
export class LostWriteConflict extends Error {
  constructor(key: string, cause: unknown) {
    super(`the write of ${key} lost its answer and another writer changed the key meanwhile`, { cause });
  }
}

export function isConflict(err: unknown): boolean {
  return (
    err instanceof LostWriteConflict ||
    (err instanceof JetStreamApiError &&
      (err.code === 10071 /* wrong last sequence */ ||
        err.code === 10164 /* wrong last sequence unknown */ ||
        // STREAM.MSG.DELETE of a sequence that holds no message: the key moved on, or is gone.
        err.code === 10043 /* sequence not found */ ||
        (err.code === 10057 && /no message found|EOF/i.test(err.message))))
  );
}

/** JetStream's refusals of a write that does not fit: the bucket's or the account's limits. */
const FULL =
  /maximum (bytes|messages|message size)|message size exceeds|insufficient resources|storage limit|resource limits exceeded/i;

export function asUnavailable(err: unknown): SysboxError {
  if (err instanceof SysboxError) return err;
  if (FULL.test((err as Error).message)) {
    return new SysboxError('exhausted', `state store full: ${(err as Error).message}`, { cause: err });
  }
  return new SysboxError('unavailable', `state store: ${(err as Error).message}`, { cause: err });
}

export async function kvCall<R>(fn: () => Promise<R>): Promise<R> {
  try {
    return await fn();
  } catch (err) {
    throw asUnavailable(err);
  }
}
