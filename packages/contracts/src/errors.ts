/**
 * The closed set of error codes every service may answer, and their total mappings.
 * Adding a code does not compile until NATS_STATUS, GRPC_STATUS and ERROR_DESCRIPTIONS name it.
 */
export const ERROR_CODES = [
  'invalid-request',
  'invalid-size',
  'not-found',
  'already-exists',
  'failed-precondition',
  'exhausted',
  'unsupported',
  'unavailable',
  'timeout',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Numeric, because nats.js and the NATS CLI read `Nats-Service-Error-Code` with parseInt. */
export const NATS_STATUS: Record<ErrorCode, number> = {
  'invalid-request': 400,
  'invalid-size': 400,
  'not-found': 404,
  'already-exists': 409,
  'failed-precondition': 412,
  exhausted: 507,
  unsupported: 501,
  unavailable: 503,
  timeout: 504,
  internal: 500,
};

/** gRPC status codes (grpc/status.proto), kept numeric so contracts need no gRPC dependency. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

export const GRPC_STATUS: Record<ErrorCode, GrpcStatusCode> = {
  'invalid-request': GrpcStatus.INVALID_ARGUMENT,
  'invalid-size': GrpcStatus.INVALID_ARGUMENT,
  'not-found': GrpcStatus.NOT_FOUND,
  'already-exists': GrpcStatus.ALREADY_EXISTS,
  'failed-precondition': GrpcStatus.FAILED_PRECONDITION,
  exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  unsupported: GrpcStatus.UNIMPLEMENTED,
  unavailable: GrpcStatus.UNAVAILABLE,
  timeout: GrpcStatus.DEADLINE_EXCEEDED,
  internal: GrpcStatus.INTERNAL,
};

export const ERROR_DESCRIPTIONS: Record<ErrorCode, string> = {
  'invalid-request': 'the request failed validation (bad JSON, a field out of range, a hostile id or path)',
  'invalid-size': 'a requested size is zero, too large, or not one the service can serve',
  'not-found': 'the container, volume, mark or clone named by the request is unknown',
  'already-exists': 'the request would create something that already exists',
  'failed-precondition': 'the target is not in a state that allows the operation',
  exhausted: 'a finite pool (subordinate ids, a state bucket) has no room left',
  unsupported: 'the host cannot do this (kernel feature missing, rootfs not on overlayfs)',
  unavailable: 'a service or the NATS server did not answer; retry later',
  timeout: 'the operation ran past its time bound and was cancelled',
  internal: 'an unexpected failure; the service log has the cause',
};

const codeSet: ReadonlySet<string> = new Set(ERROR_CODES);
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && codeSet.has(value);
}

const codeByNatsStatus = new Map<number, ErrorCode>();
for (const code of ERROR_CODES) {
  if (!codeByNatsStatus.has(NATS_STATUS[code])) codeByNatsStatus.set(NATS_STATUS[code], code);
}
/** Best guess of the code behind a bare status (a reply from a non-kit responder has no body). */
export function errorCodeFromNatsStatus(status: number): ErrorCode {
  return codeByNatsStatus.get(status) ?? 'internal';
}

export class SysboxError extends Error {
  override readonly name = 'SysboxError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** Any thrown value as a SysboxError; unknown throws become `internal` and keep their cause. */
  static from(err: unknown): SysboxError {
    if (err instanceof SysboxError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new SysboxError('internal', message, { cause: err });
  }
}

export function isSysboxError(err: unknown, code?: ErrorCode): err is SysboxError {
  return err instanceof SysboxError && (code === undefined || err.code === code);
}
