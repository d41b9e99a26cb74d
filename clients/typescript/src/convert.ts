/**
 * Generated messages <-> the client's plain objects: durations as milliseconds, timestamps
 * as `Date`s, uint64 as numbers, enums as their names without the prefix. No I/O here.
 */

import { create } from "@bufbuild/protobuf";
import { DurationSchema, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

import { checkBool, checkDimension, checkInt, checkMs, checkName, checkOptions, checkU64, typeName, U32_MAX } from "./checks.js";
import * as idem from "./gen/permitd/v1/idempotency_pb.js";
import * as permits from "./gen/permitd/v1/permits_pb.js";
import * as quotas from "./gen/permitd/v1/quotas_pb.js";
import * as res from "./gen/permitd/v1/resource_pb.js";
import type {
  BackoffKind,
  DimensionQuota,
  FailurePolicy,
  LearnedLimit,
  Outcome,
  QuotaUpdate,
  Resource,
  ResourceSpec,
  ResourceSummary,
  StoredResult,
} from "./types.js";

/** Milliseconds (finite, >= 0) -> a Duration, to the nanosecond. */
export function duration(ms: number): Duration {
  let seconds = Math.floor(ms / 1000);
  let nanos = Math.round((ms - seconds * 1000) * 1e6);
  if (nanos >= 1e9) {
    seconds += 1;
    nanos -= 1e9;
  }
  return create(DurationSchema, { seconds: BigInt(seconds), nanos });
}

/** A Duration -> milliseconds (fractions kept); 0 when absent. */
export function msOf(d: Duration | undefined): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

/** A Timestamp -> a Date (millisecond precision); `undefined` when absent. */
export function dateOf(t: Timestamp | undefined): Date | undefined {
  return t ? new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6)) : undefined;
}

/**
 * An enum value's name without its prefix. The generated enums already cut it
 * (`DenialReason[1] === "RATE_LIMITED"`); a full name is cut here too. A value this
 * generated code does not know (a newer server's) reads as its number.
 */
function suffix(names: Record<number, string>, value: number, prefix: string): string {
  const name = names[value];
  if (name === undefined) return String(value);
  return name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

export function denialReasonName(v: permits.DenialReason): string {
  return suffix(permits.DenialReason as unknown as Record<number, string>, v, "DENIAL_REASON_");
}

export function idemStateName(v: idem.IdempotencyState): string {
  return suffix(idem.IdempotencyState as unknown as Record<number, string>, v, "IDEMPOTENCY_STATE_");
}

/** A map of uint64 -> numbers. */
export function numMap(m: { [k: string]: bigint }): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) out[k] = Number(v);
  return out;
}

export function outcomeOf(r: permits.ReportOutcomeResponse, status: number): Outcome {
  return Object.freeze({
    retry: r.retry,
    retryAfterMs: msOf(r.retryAfter),
    cooldownUntil: dateOf(r.cooldownUntil),
    learned: Object.freeze(r.learned.map(learnedOf)),
    status,
  });
}

function learnedOf(l: permits.LearnedLimit): LearnedLimit {
  return Object.freeze({
    dimension: l.dimension,
    limit: Number(l.limit),
    remaining: Number(l.remaining),
    resetAt: dateOf(l.resetAt),
    source: l.source,
  });
}

function dimensionOf(d: quotas.DimensionQuota): DimensionQuota {
  return Object.freeze({
    dimension: d.dimension,
    limit: Number(d.limit),
    remaining: Number(d.remaining),
    resetAt: dateOf(d.resetAt),
    source: suffix(quotas.LimitSource as unknown as Record<number, string>, d.source, "LIMIT_SOURCE_"),
    periodMs: msOf(d.period),
    reason: d.reason,
    ratePerSecond: d.ratePerSecond,
  });
}

export function quotaOf(u: quotas.QuotaUpdate): QuotaUpdate {
  const dimensions = Object.freeze(u.dimensions.map(dimensionOf));
  const remaining: Record<string, number> = {};
  for (const d of dimensions) remaining[d.dimension] = d.remaining;
  return Object.freeze({
    resource: u.resource,
    partition: u.partition,
    dimensions,
    remaining: Object.freeze(remaining),
    inFlight: u.inFlight,
    concurrency: u.concurrency,
    queueDepth: u.queueDepth,
    cooldownUntil: dateOf(u.cooldownUntil),
    cooldownReason: u.cooldownReason,
    grantedTotal: Number(u.grantedTotal),
    deniedTotal: Number(u.deniedTotal),
    upstream429Total: Number(u.upstream429Total),
    at: dateOf(u.at),
    probing: u.probing,
  });
}

export function summaryOf(m: quotas.ResourceSummary): ResourceSummary {
  return Object.freeze({
    resource: m.resource,
    resourceBucket: m.resourceBucket ? quotaOf(m.resourceBucket) : undefined,
    perPartition: m.perPartition,
    livePartitions: Number(m.livePartitions),
    inFlight: Number(m.inFlight),
    queueDepth: Number(m.queueDepth),
    nearEmpty: Number(m.nearEmpty),
    nearEmptyShare: m.nearEmptyShare,
    coolingDown: Number(m.coolingDown),
    probing: Number(m.probing),
    grantedTotal: Number(m.grantedTotal),
    deniedTotal: Number(m.deniedTotal),
    upstream429Total: Number(m.upstream429Total),
    grantedPerSecond: m.grantedPerSecond,
    deniedPerSecond: m.deniedPerSecond,
    rateWindowMs: msOf(m.rateWindow),
    top: Object.freeze(m.top.map(quotaOf)),
    at: dateOf(m.at),
    version: Number(m.version),
  });
}

const decoder = new TextDecoder();

/** A stored result (from Begin, or the one just completed). */
export function storedOf(r: { statusCode: number; headers: Record<string, string>; body: Uint8Array; metadata: Record<string, string> }): StoredResult {
  const status = r.statusCode;
  const headers = Object.freeze({ ...r.headers });
  const body = new Uint8Array(r.body);
  const metadata = Object.freeze({ ...r.metadata });
  return Object.freeze({
    status,
    headers,
    body,
    metadata,
    text: () => decoder.decode(body),
    json: (): unknown => JSON.parse(decoder.decode(body)),
    toResponse: (): Response => {
      if (status < 200 || status > 599) {
        throw new RangeError(`a stored status ${status} cannot make a fetch Response (200-599 only)`);
      }
      const noBody = status === 204 || status === 205 || status === 304;
      return new Response(noBody ? null : body, { status, headers });
    },
  });
}

const SCOPES: Readonly<Record<string, res.LimitScope>> = {
  resource: res.LimitScope.RESOURCE,
  partition: res.LimitScope.PARTITION,
};
const KINDS: Readonly<Record<BackoffKind, res.BackoffKind>> = {
  exponential: res.BackoffKind.EXPONENTIAL,
  full_jitter: res.BackoffKind.FULL_JITTER,
  equal_jitter: res.BackoffKind.EQUAL_JITTER,
  decorrelated_jitter: res.BackoffKind.DECORRELATED_JITTER,
};
const POLICIES: Readonly<Record<FailurePolicy, res.FailurePolicy>> = {
  fail_closed: res.FailurePolicy.FAIL_CLOSED,
  local_fallback: res.FailurePolicy.LOCAL_FALLBACK,
};

const SPEC_KEYS = [
  "limits",
  "concurrency",
  "leaseMs",
  "perPartition",
  "backoff",
  "maxQueue",
  "learnFromHeaders",
  "dimensions",
  "failurePolicy",
  "limitsKnown",
  "probeConcurrency",
  "acceptFeedbackWithoutPermit",
] as const;

/** A resource definition, checked, as the proto message. */
export function resourceMessage(name: unknown, specIn: ResourceSpec | undefined): res.Resource {
  const spec = checkOptions(specIn, "resource spec", SPEC_KEYS);
  const r = create(res.ResourceSchema, { name: checkName(name, "name") });
  const limits = spec.limits ?? [];
  if (!Array.isArray(limits)) throw new TypeError(`limits must be an array of limits, not ${typeName(limits)}`);
  limits.forEach((lim: unknown, i: number) => {
    const l = checkOptions(lim as Record<string, unknown>, `limits[${i}]`, ["dimension", "amount", "periodMs", "burst", "scope"]);
    const period = checkMs(l["periodMs"], `limits[${i}].periodMs`, { allowZero: false, required: true }) as number;
    const scope = l["scope"];
    if (scope !== undefined && (typeof scope !== "string" || !(scope in SCOPES))) {
      throw new RangeError(`limits[${i}].scope must be "resource" or "partition", not ${JSON.stringify(scope)}`);
    }
    r.limits.push(
      create(res.LimitSchema, {
        dimension: checkDimension(l["dimension"], `limits[${i}].dimension`),
        amount: BigInt(checkInt(l["amount"], `limits[${i}].amount`, 1, 1e12)),
        period: duration(period),
        burst: l["burst"] === undefined ? 0n : checkU64(l["burst"], `limits[${i}].burst`),
        scope: scope === undefined ? res.LimitScope.UNSPECIFIED : (SCOPES[scope as string] as res.LimitScope),
      }),
    );
  });
  if (spec.concurrency !== undefined) r.concurrency = checkInt(spec.concurrency, "concurrency", 0, U32_MAX);
  const lease = checkMs(spec.leaseMs, "leaseMs", { allowZero: false });
  if (lease !== undefined) r.lease = duration(lease);
  if (spec.perPartition !== undefined) r.perPartition = checkBool(spec.perPartition, "perPartition");
  if (spec.backoff !== undefined) {
    const b = checkOptions(spec.backoff, "backoff", ["kind", "baseMs", "maxMs", "multiplier", "maxAttempts", "maxRetryAfterMs"]);
    const kind = b.kind ?? "full_jitter";
    if (typeof kind !== "string" || !(kind in KINDS)) {
      throw new RangeError(`backoff.kind must be one of ${Object.keys(KINDS).join(", ")}, not ${JSON.stringify(kind)}`);
    }
    const pb = create(res.BackoffPolicySchema, { kind: KINDS[kind] });
    for (const [field, key] of [["baseMs", "base"], ["maxMs", "max"], ["maxRetryAfterMs", "maxRetryAfter"]] as const) {
      const v = checkMs(b[field], `backoff.${field}`);
      if (v !== undefined) pb[key] = duration(v);
    }
    if (b.multiplier !== undefined) {
      if (typeof b.multiplier !== "number" || !Number.isFinite(b.multiplier) || b.multiplier < 0) {
        throw new TypeError("backoff.multiplier must be a finite number >= 0");
      }
      pb.multiplier = b.multiplier;
    }
    if (b.maxAttempts !== undefined) pb.maxAttempts = checkInt(b.maxAttempts, "backoff.maxAttempts", 0, U32_MAX);
    r.backoff = pb;
  }
  if (spec.maxQueue !== undefined) r.maxQueue = checkInt(spec.maxQueue, "maxQueue", 0, U32_MAX);
  if (spec.learnFromHeaders !== undefined) r.learnFromHeaders = checkBool(spec.learnFromHeaders, "learnFromHeaders");
  if (spec.dimensions !== undefined) {
    if (!Array.isArray(spec.dimensions)) throw new TypeError("dimensions must be an array of dimension names");
    spec.dimensions.forEach((d: unknown, i: number) => r.dimensions.push(checkDimension(d, `dimensions[${i}]`)));
  }
  if (spec.failurePolicy !== undefined) {
    const p = spec.failurePolicy;
    if (typeof p !== "string" || !(p in POLICIES)) {
      throw new RangeError(`failurePolicy must be "fail_closed" or "local_fallback", not ${JSON.stringify(p)}`);
    }
    r.failurePolicy = POLICIES[p];
  }
  if (spec.limitsKnown !== undefined) r.limitsKnown = checkBool(spec.limitsKnown, "limitsKnown");
  if (spec.probeConcurrency !== undefined) {
    r.probeConcurrency = checkInt(spec.probeConcurrency, "probeConcurrency", 0, 1000);
  }
  if (spec.acceptFeedbackWithoutPermit !== undefined) {
    r.acceptFeedbackWithoutPermit = checkBool(spec.acceptFeedbackWithoutPermit, "acceptFeedbackWithoutPermit");
  }
  return r;
}

function invert<T extends string>(m: Readonly<Record<T, number>>): Record<number, T> {
  const out: Record<number, T> = {};
  for (const [k, v] of Object.entries(m) as [T, number][]) out[v] = k;
  return out;
}
const SCOPE_NAMES = invert(SCOPES as Record<"resource" | "partition", number>);
const KIND_NAMES = invert(KINDS);
const POLICY_NAMES = invert(POLICIES);

/** A stored resource message -> the plain object. */
export function resourceOf(r: res.Resource): Resource {
  const b = r.backoff;
  return Object.freeze({
    name: r.name,
    limits: Object.freeze(
      r.limits.map((l) =>
        Object.freeze({
          dimension: l.dimension,
          amount: Number(l.amount),
          periodMs: msOf(l.period),
          burst: Number(l.burst),
          scope: SCOPE_NAMES[l.scope],
        }),
      ),
    ),
    concurrency: r.concurrency,
    leaseMs: r.lease ? msOf(r.lease) : undefined,
    perPartition: r.perPartition,
    backoff: b
      ? Object.freeze({
          kind: KIND_NAMES[b.kind] ?? "unspecified",
          baseMs: b.base ? msOf(b.base) : undefined,
          maxMs: b.max ? msOf(b.max) : undefined,
          multiplier: b.multiplier,
          maxAttempts: b.maxAttempts,
          maxRetryAfterMs: b.maxRetryAfter ? msOf(b.maxRetryAfter) : undefined,
        })
      : undefined,
    maxQueue: r.maxQueue,
    learnFromHeaders: r.learnFromHeaders,
    dimensions: Object.freeze([...r.dimensions]),
    failurePolicy: POLICY_NAMES[r.failurePolicy],
    limitsKnown: r.limitsKnown,
    probeConcurrency: r.probeConcurrency,
    acceptFeedbackWithoutPermit: r.acceptFeedbackWithoutPermit,
  });
}
