/** How errors travel on the wire: NATS service headers plus a JSON body, decoded back to SysboxError. */
import { headers, type MsgHdrs } from '@nats-io/nats-core';
import { NATS_STATUS, SysboxError, errorCodeFromNatsStatus, isErrorCode } from '@sysbox-mgr-ts/contracts';

export const ERROR_HEADER = 'Nats-Service-Error';
export const ERROR_CODE_HEADER = 'Nats-Service-Error-Code';
/** Correlates one sysbox-runc call across the gateway and the services it asks. */
export const REQUEST_ID_HEADER = 'Sysbox-Request-Id';
/** One logical call: every copy a client sends of it (see client.ts) carries the same value. */
export const CALL_ID_HEADER = 'Sysbox-Call-Id';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function decodeJson(data: Uint8Array): unknown {
  return JSON.parse(decoder.decode(data));
}

export function errorReply(err: SysboxError): { data: Uint8Array; headers: MsgHdrs } {
  const h = headers();
  // Header values must stay on one line.
  h.set(ERROR_HEADER, err.message.replace(/[\r\n]+/g, ' ').slice(0, 1024));
  h.set(ERROR_CODE_HEADER, String(NATS_STATUS[err.code]));
  return { data: encodeJson({ error: { code: err.code, message: err.message } }), headers: h };
}

/** The SysboxError an error reply carries, or undefined for a success reply. */
export function errorFromReply(data: Uint8Array, h: MsgHdrs | undefined): SysboxError | undefined {
  const status = h?.get(ERROR_CODE_HEADER);
  if (!status) return undefined;
  let body: unknown;
  try {
    body = data.length > 0 ? decodeJson(data) : undefined;
  } catch {
    body = undefined;
  }
  const e = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const code = isErrorCode(e?.code) ? e.code : errorCodeFromNatsStatus(Number.parseInt(status, 10));
  const message = typeof e?.message === 'string' ? e.message : (h?.get(ERROR_HEADER) ?? `error ${status}`);
  return new SysboxError(code, message);
}
