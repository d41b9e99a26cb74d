/**
 * The errors the client throws about permitd or the upstream.
 *
 * Every error from the server or the transport is a {@link PermitdError} whose `code` is the
 * gRPC status code name (`"UNAVAILABLE"`, `"NOT_FOUND"` …), whichever protocol carried it.
 * Bad arguments are caught before any call and throw plain `TypeError` / `RangeError`; a bad
 * argument that only the server can judge throws {@link InvalidArgument}.
 */

import { Code, ConnectError } from "@connectrpc/connect";

/** The gRPC status code names, indexed by Connect's numeric `Code` (the same numbering). */
const CODE_NAMES: Readonly<Record<number, string>> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** A gRPC status code name, e.g. `"NOT_FOUND"`. */
export type CodeName = string;

/**
 * Base class of every error the client throws about permitd or the upstream. `code` is the
 * gRPC status code name when the error came from an RPC, else `undefined`.
 */
export class PermitdError extends Error {
  readonly code: CodeName | undefined;

  constructor(message: string, options?: { code?: CodeName | undefined; cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = options?.code;
  }
}

/** permitd could not be reached, is shutting down, or did not answer in time. */
export class PermitdUnavailable extends PermitdError {}

/** The server refused a request field (`INVALID_ARGUMENT`); the message names it. */
export class InvalidArgument extends PermitdError {}

/** Unknown resource, permit or key (`NOT_FOUND`). */
export class NotFound extends PermitdError {}

/** No credential, an unknown token or an untrusted certificate (`UNAUTHENTICATED`). */
export class Unauthenticated extends PermitdError {}

/**
 * The caller's role (or priority ceiling) does not allow the call (`PERMISSION_DENIED`); the
 * message names what is missing.
 */
export class PermissionDenied extends PermitdError {}

/** Why a permit was not granted. */
export type DenialReason =
  | "RATE_LIMITED"
  | "CONCURRENCY_LIMITED"
  | "COOLDOWN"
  | "QUEUE_TIMEOUT"
  | "QUEUE_FULL"
  | (string & {});

/**
 * A permit was not granted. `retryAfterMs` is when a retry can succeed (never zero),
 * `reason` one of `RATE_LIMITED`, `CONCURRENCY_LIMITED`, `COOLDOWN`, `QUEUE_TIMEOUT`,
 * `QUEUE_FULL`. A denial is permitd's normal answer, so `code` is `undefined`.
 */
export class PermitDenied extends PermitdError {
  readonly resource: string;
  readonly partition: string;
  readonly reason: DenialReason;
  readonly retryAfterMs: number;

  constructor(resource: string, partition: string, reason: DenialReason, retryAfterMs: number) {
    const where = resource + (partition ? ` [${partition}]` : "");
    super(`permit for ${where} denied: ${reason}, retry after ${(retryAfterMs / 1000).toFixed(3)}s`);
    this.resource = resource;
    this.partition = partition;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * `call()` gave up: the resource's backoff policy (or `maxAttempts`) allows no more attempts.
 * `lastResponse` is the upstream's last answer (`undefined` when the last attempt threw
 * instead; that error is `lastError` and the `cause`), `attempts` how many calls were made,
 * `status` the last status (0 = no answer).
 */
export class RetriesExhausted extends PermitdError {
  readonly resource: string;
  readonly attempts: number;
  readonly status: number;
  readonly lastResponse: unknown;
  readonly lastError: unknown;

  constructor(resource: string, attempts: number, status: number, lastResponse: unknown, lastError: unknown) {
    const what = status ? `status ${status}` : `no answer (${describe(lastError)})`;
    super(`${resource}: gave up after ${attempts} attempt(s), last ${what}`, { cause: lastError });
    this.resource = resource;
    this.attempts = attempts;
    this.status = status;
    this.lastResponse = lastResponse;
    this.lastError = lastError;
  }
}

/** The idempotency key was already used for a request with another fingerprint. */
export class IdempotencyConflict extends PermitdError {
  readonly key: string;

  constructor(key: string) {
    super(`idempotency key ${JSON.stringify(key)} was used for a different request`);
    this.key = key;
  }
}

/** Another worker still holds the idempotency key after waiting `waitMs`. */
export class IdempotencyInProgress extends PermitdError {
  readonly key: string;
  readonly retryAfterMs: number;

  constructor(key: string, retryAfterMs: number) {
    super(
      `idempotency key ${JSON.stringify(key)} is held by another worker; ` +
        `retry after ${(retryAfterMs / 1000).toFixed(3)}s`,
    );
    this.key = key;
    this.retryAfterMs = retryAfterMs;
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/** The gRPC code name of a Connect code number. */
export function codeName(code: Code): CodeName {
  return CODE_NAMES[code] ?? "UNKNOWN";
}

/**
 * An error from an RPC (a `ConnectError`, or anything a transport threw) as the client's
 * error class; `what` names the call (`"Permits.AcquirePermit"`).
 */
export function mapRpcError(e: unknown, what: string): PermitdError {
  if (e instanceof PermitdError) return e;
  const ce = ConnectError.from(e);
  const name = codeName(ce.code);
  const msg = `${what}: ${ce.rawMessage || name}`;
  const opts = { code: name, cause: e };
  switch (ce.code) {
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return new PermitdUnavailable(`${msg} (${name})`, opts);
    case Code.InvalidArgument:
      return new InvalidArgument(msg, opts);
    case Code.NotFound:
      return new NotFound(msg, opts);
    case Code.Unauthenticated:
      return new Unauthenticated(msg, opts);
    case Code.PermissionDenied:
      return new PermissionDenied(msg, opts);
    default:
      return new PermitdError(`${msg} (${name})`, opts);
  }
}
