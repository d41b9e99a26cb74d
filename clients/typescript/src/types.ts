/**
 * What the client hands back: plain, readonly objects with numbers (not bigints), `Date`s
 * and milliseconds, converted from the generated messages in `convert.ts`. Counts and
 * limits are at most 10^12 in practice, well within a number's exact integers.
 */

/** What permitd learned from one upstream header. */
export interface LearnedLimit {
  readonly dimension: string;
  readonly limit: number;
  readonly remaining: number;
  readonly resetAt: Date | undefined;
  /** The header it came from. */
  readonly source: string;
}

/**
 * permitd's answer to a report: whether and when to retry, a cooldown in force for every
 * worker, and what the headers taught it. `status` is the status that was reported.
 */
export interface Outcome {
  readonly retry: boolean;
  readonly retryAfterMs: number;
  readonly cooldownUntil: Date | undefined;
  readonly learned: readonly LearnedLimit[];
  readonly status: number;
}

/** `computeBackoff`'s answer. */
export interface BackoffAdvice {
  readonly retry: boolean;
  readonly retryAfterMs: number;
  readonly giveUp: boolean;
}

/** Where a limit's figures come from. */
export type LimitSource = "CONFIG" | "LEARNED" | "ADAPTIVE" | "UNSPECIFIED" | (string & {});

/** One dimension's state in a bucket. */
export interface DimensionQuota {
  readonly dimension: string;
  /** Units per period of the tightest limit of the dimension. */
  readonly limit: number;
  /** Units available now. */
  readonly remaining: number;
  /** When the bucket is full again. */
  readonly resetAt: Date | undefined;
  readonly source: LimitSource;
  readonly periodMs: number;
  /** Why the limit is what it is, in words. */
  readonly reason: string;
  readonly ratePerSecond: number;
}

/** The state of one bucket (a resource, or one partition of it). */
export interface QuotaUpdate {
  readonly resource: string;
  /** Empty for the resource-wide bucket. */
  readonly partition: string;
  readonly dimensions: readonly DimensionQuota[];
  /** Dimension -> units available now. */
  readonly remaining: Readonly<Record<string, number>>;
  readonly inFlight: number;
  /** The concurrency limit (0 = unlimited). */
  readonly concurrency: number;
  readonly queueDepth: number;
  /** Set while the resource is paused after an upstream 429/503. */
  readonly cooldownUntil: Date | undefined;
  /** Why the cooldown is in force, in words; empty without one. */
  readonly cooldownReason: string;
  readonly grantedTotal: number;
  readonly deniedTotal: number;
  readonly upstream429Total: number;
  readonly at: Date | undefined;
  /** Slow start: the upstream has not confirmed the limits yet. */
  readonly probing: boolean;
}

/**
 * One resource at a glance: its resource-wide bucket, totals over its live partitions (those
 * under the partition prefix asked for) and the partitions under most pressure.
 */
export interface ResourceSummary {
  readonly resource: string;
  /** `undefined` for a per-partition resource without shared limits. */
  readonly resourceBucket: QuotaUpdate | undefined;
  readonly perPartition: boolean;
  readonly livePartitions: number;
  readonly inFlight: number;
  readonly queueDepth: number;
  /** Partitions with at most 10 % left of their tightest limit. */
  readonly nearEmpty: number;
  readonly nearEmptyShare: number;
  readonly coolingDown: number;
  readonly probing: number;
  readonly grantedTotal: number;
  readonly deniedTotal: number;
  readonly upstream429Total: number;
  readonly grantedPerSecond: number;
  readonly deniedPerSecond: number;
  /** The span the rates were measured over (0 for the first reading). */
  readonly rateWindowMs: number;
  /** Most pressed first. */
  readonly top: readonly QuotaUpdate[];
  readonly at: Date | undefined;
  /** Equal versions are the same reading. */
  readonly version: number;
}

/** `amount` units of `dimension` per `periodMs` (`burst` 0 = `amount`). */
export interface Limit {
  readonly dimension: string;
  readonly amount: number;
  readonly periodMs: number;
  readonly burst?: number | undefined;
  /** `undefined` follows the resource's `perPartition`. */
  readonly scope?: "resource" | "partition" | undefined;
}

export type BackoffKind = "exponential" | "full_jitter" | "equal_jitter" | "decorrelated_jitter";

/** A resource's retry policy; absent fields take the server's defaults. */
export interface Backoff {
  readonly kind?: BackoffKind | undefined;
  readonly baseMs?: number | undefined;
  readonly maxMs?: number | undefined;
  readonly multiplier?: number | undefined;
  readonly maxAttempts?: number | undefined;
  readonly maxRetryAfterMs?: number | undefined;
}

export type FailurePolicy = "fail_closed" | "local_fallback";

/** A resource definition for `putResource` (see resource.proto for each field). */
export interface ResourceSpec {
  readonly limits?: readonly Limit[] | undefined;
  readonly concurrency?: number | undefined;
  readonly leaseMs?: number | undefined;
  readonly perPartition?: boolean | undefined;
  readonly backoff?: Backoff | undefined;
  readonly maxQueue?: number | undefined;
  readonly learnFromHeaders?: boolean | undefined;
  readonly dimensions?: readonly string[] | undefined;
  readonly failurePolicy?: FailurePolicy | undefined;
  readonly limitsKnown?: boolean | undefined;
  readonly probeConcurrency?: number | undefined;
  readonly acceptFeedbackWithoutPermit?: boolean | undefined;
}

/** A limit as stored. */
export interface StoredLimit {
  readonly dimension: string;
  readonly amount: number;
  readonly periodMs: number;
  readonly burst: number;
  readonly scope: "resource" | "partition" | undefined;
}

/** A backoff policy as stored (durations absent: the server's defaults). */
export interface StoredBackoff {
  readonly kind: BackoffKind | "unspecified";
  readonly baseMs: number | undefined;
  readonly maxMs: number | undefined;
  readonly multiplier: number;
  readonly maxAttempts: number;
  readonly maxRetryAfterMs: number | undefined;
}

/** A resource as the server stores it, defaults filled in. */
export interface Resource {
  readonly name: string;
  readonly limits: readonly StoredLimit[];
  readonly concurrency: number;
  readonly leaseMs: number | undefined;
  readonly perPartition: boolean;
  readonly backoff: StoredBackoff | undefined;
  readonly maxQueue: number;
  readonly learnFromHeaders: boolean | undefined;
  readonly dimensions: readonly string[];
  readonly failurePolicy: FailurePolicy | undefined;
  readonly limitsKnown: boolean | undefined;
  readonly probeConcurrency: number | undefined;
  readonly acceptFeedbackWithoutPermit: boolean | undefined;
}

/**
 * The stored result of a call made under an idempotency key. Reads like a response:
 * `status`, `headers`, `body`, `text()`, `json()`, and `toResponse()` rebuilds a fetch
 * `Response`.
 */
export interface StoredResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
  readonly metadata: Readonly<Record<string, string>>;
  text(): string;
  json(): unknown;
  /** A fetch `Response` with the stored status, headers and body (`RangeError` for a status outside 200-599). */
  toResponse(): Response;
}
