import type { z } from 'zod';
import type { ErrorCode } from './errors.js';

export type ServiceName = 'subid' | 'vol' | 'shiftfs' | 'rootfs';

/** One operation: the subject it is served on, what it takes, what it answers, how it may fail. */
export interface Contract<Req extends z.ZodType = z.ZodType, Rep extends z.ZodType = z.ZodType> {
  readonly service: ServiceName;
  /** Endpoint name in `$SRV.INFO` (a subject-safe token). */
  readonly endpoint: string;
  readonly subject: (node: string) => string;
  readonly request: Req;
  readonly reply: Rep;
  readonly errors: readonly ErrorCode[];
  readonly description: string;
  /** Changes nothing: the read-only monitor identity may call it. */
  readonly readOnly?: boolean;
  /**
   * Sending it twice ends as sending it once (a repeat answers as the first did, or not-found for
   * a release already done): a client may send it again when its answer may have been lost.
   * Read-only operations are idempotent by nature.
   */
  readonly idempotent?: boolean;
}

export type RequestOf<C extends Contract> = z.infer<C['request']>;
export type ReplyOf<C extends Contract> = z.infer<C['reply']>;
/** What a caller may pass: the schema's input (defaults may be left out). */
export type RequestInputOf<C extends Contract> = z.input<C['request']>;

/** The subject of an operation: `sysbox.<node>.<service>[.<group>].<op>`. */
export function subjectOf(service: ServiceName, ...tokens: string[]): (node: string) => string {
  const tail = [service, ...tokens].join('.');
  return (node: string) => `sysbox.${node}.${tail}`;
}

export function defineContract<Req extends z.ZodType, Rep extends z.ZodType>(
  c: Contract<Req, Rep>,
): Contract<Req, Rep> {
  return c;
}

/** A micro service as seen on `$SRV`: its name and its operations. */
export interface ServiceContract {
  readonly service: ServiceName;
  /** Name in `$SRV.PING` / `nats micro ls`. */
  readonly name: string;
  /** The JetStream KV bucket that holds this service's state; only the service's identity may use it. */
  readonly bucket: string;
  readonly description: string;
  readonly contracts: readonly Contract[];
}
