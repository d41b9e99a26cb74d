/**
 * TypeScript client for permitd, the rate-limit coordination service. Ask permitd before
 * each call to a rate-limited API, and tell it what the API answered:
 *
 * ```ts
 * const client = new Client(); // $PERMITD_TARGET, else http://127.0.0.1:50051
 * await client.withPermit("openai:gpt-4o", { cost: { tokens: 1200 }, maxWaitMs: 30_000 }, async (p) => {
 *   const res = await fetch(url, init);
 *   await p.report(res);
 *   return res.json();
 * });
 * ```
 *
 * The generated messages and service descriptors are under `@permitd/client/gen/*`.
 */

export {
  Client,
  DEFAULT_TARGET,
  TARGET_ENV,
  TOKEN_ENV,
  type AcquireOptions,
  type CachedFunction,
  type CachedOptions,
  type CallContext,
  type CallOptions_ as CallOptions,
  type ClientOptions,
  type IdempotentOptions,
  type WatchOptions,
  type WatchSummariesOptions,
} from "./client.js";
export {
  IdempotencyConflict,
  IdempotencyInProgress,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  PermitDenied,
  PermitdError,
  PermitdUnavailable,
  RetriesExhausted,
  Unauthenticated,
  type CodeName,
  type DenialReason,
} from "./errors.js";
export { canonicalJson, stableHash } from "./hash.js";
export { isNetworkError, normalizeHeaders, type HeadersLike, type HeaderValue, type ResponseLike } from "./http.js";
export { Idempotent, type CompleteOptions } from "./idempotent.js";
export { Permit, type Cost, type ReportOptions } from "./permit.js";
export { ServerStream } from "./stream.js";
export type {
  Backoff,
  BackoffAdvice,
  BackoffKind,
  DimensionQuota,
  FailurePolicy,
  LearnedLimit,
  Limit,
  LimitSource,
  Outcome,
  QuotaUpdate,
  Resource,
  ResourceSpec,
  ResourceSummary,
  StoredBackoff,
  StoredLimit,
  StoredResult,
} from "./types.js";
