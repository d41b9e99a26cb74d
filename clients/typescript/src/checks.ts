/**
 * Argument checks, run before any call: a wrong type throws `TypeError`, a value out of range
 * `RangeError`, each naming the argument. The bounds are the server's (resource.proto and
 * permits.proto), so a request that passes here is refused by the server only for what only
 * it can judge (an unknown resource, a cost above a limit's burst).
 */

export const MAX_NAME_BYTES = 200;
export const MAX_KEY_BYTES = 255;
export const MAX_FINGERPRINT_BYTES = 512;
export const U32_MAX = 0xffff_ffff;
export const U64_MAX = (1n << 64n) - 1n;
/** Longest duration the client sends (a year and a bit); the server checks its own bounds. */
export const MAX_DURATION_MS = 400 * 24 * 3600 * 1000;

const NAME_RE = /^[A-Za-z0-9._:/@-]*$/;
const DIMENSION_RE = /^[A-Za-z0-9._:/@-]{1,64}$/;
const encoder = new TextEncoder();

export function byteLength(s: string): number {
  return encoder.encode(s).length;
}

export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "object") return (v as object).constructor?.name ?? "object";
  return typeof v;
}

/** A resource or partition name: 1 (0 when not required) to 200 bytes of `[A-Za-z0-9._:/@-]`. */
export function checkName(value: unknown, field: string, required = true): string {
  if (typeof value !== "string") throw new TypeError(`${field} must be a string, not ${typeName(value)}`);
  if (required && !value) throw new RangeError(`${field} must not be empty`);
  const n = byteLength(value);
  if (n > MAX_NAME_BYTES) throw new RangeError(`${field} is ${n} bytes, at most ${MAX_NAME_BYTES}`);
  if (!NAME_RE.test(value)) {
    throw new RangeError(`${field} ${JSON.stringify(value)} may only hold letters, digits and . _ : / @ -`);
  }
  return value;
}

/** A prefix: empty, or a name. */
export function checkPrefix(value: unknown, field: string): string {
  if (value === undefined) return "";
  return checkName(value, field, false);
}

/** An idempotency or cache key (or cache namespace): 1 to `maxBytes` bytes, no control characters. */
export function checkKey(value: unknown, field: string, maxBytes = MAX_KEY_BYTES): string {
  if (typeof value !== "string") throw new TypeError(`${field} must be a string, not ${typeName(value)}`);
  if (!value) throw new RangeError(`${field} must not be empty`);
  const n = byteLength(value);
  if (n > maxBytes) throw new RangeError(`${field} is ${n} bytes, at most ${maxBytes}`);
  for (const ch of value) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 32 || (c >= 127 && c < 160)) throw new RangeError(`${field} must not contain control characters`);
  }
  return value;
}

/** An integer number in [lo, hi]. */
export function checkInt(value: unknown, field: string, lo: number, hi: number): number {
  if (typeof value !== "number") throw new TypeError(`${field} must be an integer, not ${typeName(value)}`);
  if (!Number.isInteger(value)) throw new RangeError(`${field} must be an integer, not ${value}`);
  if (value < lo || value > hi) throw new RangeError(`${field} must be between ${lo} and ${hi}, not ${value}`);
  return value;
}

export function checkBool(value: unknown, field: string): boolean {
  if (typeof value !== "boolean") throw new TypeError(`${field} must be a boolean, not ${typeName(value)}`);
  return value;
}

/**
 * A duration in milliseconds: a finite number >= 0 (> 0 unless `allowZero`), at most about
 * 400 days; `undefined` passes through unless `required`.
 */
export function checkMs(
  value: unknown,
  field: string,
  opts: { allowZero?: boolean; required?: boolean } = {},
): number | undefined {
  const allowZero = opts.allowZero ?? true;
  if (value === undefined) {
    if (opts.required) throw new TypeError(`${field} is required`);
    return undefined;
  }
  if (typeof value !== "number") {
    throw new TypeError(`${field} must be a number of milliseconds, not ${typeName(value)}`);
  }
  if (!Number.isFinite(value)) throw new RangeError(`${field} must be finite, not ${value}`);
  if (value < 0 || (value === 0 && !allowZero)) {
    throw new RangeError(`${field} must be ${allowZero ? ">=" : ">"} 0 ms, not ${value}`);
  }
  if (value > MAX_DURATION_MS) throw new RangeError(`${field} must be at most ${MAX_DURATION_MS} ms, not ${value}`);
  return value;
}

/** A dimension name: 1-64 bytes of `[A-Za-z0-9._:/@-]`. */
export function checkDimension(value: unknown, field: string): string {
  if (typeof value !== "string") throw new TypeError(`${field} must be a string, not ${typeName(value)}`);
  if (!DIMENSION_RE.test(value)) {
    throw new RangeError(`${field} ${JSON.stringify(value)} must be 1-64 bytes of [A-Za-z0-9._:/@-]`);
  }
  return value;
}

/** A non-negative integer up to 2^64-1, as a number or a bigint -> bigint. */
export function checkU64(value: unknown, field: string): bigint {
  if (typeof value === "bigint") {
    if (value < 0n || value > U64_MAX) throw new RangeError(`${field} must be between 0 and 2^64-1, not ${value}`);
    return value;
  }
  if (typeof value !== "number") throw new TypeError(`${field} must be an integer, not ${typeName(value)}`);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${field} must be a non-negative safe integer (or a bigint), not ${value}`);
  }
  return BigInt(value);
}

/** A cost map `{dimension: amount}` -> the proto's map of bigints. */
export function checkCost(value: unknown, field: string): Record<string, bigint> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) {
    throw new TypeError(`${field} must be an object such as {tokens: 1200}, not ${typeName(value)}`);
  }
  const out: Record<string, bigint> = {};
  for (const [dim, amount] of Object.entries(value)) {
    checkDimension(dim, `${field} dimension`);
    out[dim] = checkU64(amount, `${field}.${dim}`);
  }
  return out;
}

/** An HTTP status 0-999 (0 = no answer). */
export function checkStatus(value: unknown, field = "status"): number {
  if (typeof value !== "number") throw new TypeError(`${field} must be an integer HTTP status, not ${typeName(value)}`);
  if (!Number.isInteger(value) || value < 0 || value > 999) {
    throw new RangeError(`${field} must be an HTTP status 0-999 (0 = no answer), not ${value}`);
  }
  return value;
}

export function checkFunction(value: unknown, field: string): void {
  if (typeof value !== "function") throw new TypeError(`${field} must be a function, not ${typeName(value)}`);
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== "object") return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * Names that a reader of the Python client (durations in seconds) may reach for: each is
 * refused with the milliseconds name, so that `maxWait: 30` never silently means 30 ms.
 */
const MS_HINTS: Readonly<Record<string, string>> = {
  maxWait: "maxWaitMs",
  max_wait: "maxWaitMs",
  lease: "leaseMs",
  ttl: "ttlMs",
  lockTtl: "lockTtlMs",
  lock_ttl: "lockTtlMs",
  wait: "waitMs",
  minInterval: "minIntervalMs",
  min_interval: "minIntervalMs",
  timeout: "timeoutMs",
  period: "periodMs",
  base: "baseMs",
  max: "maxMs",
  maxRetryAfter: "maxRetryAfterMs",
};

/**
 * An options object (or `undefined`) with only the `allowed` keys; an unknown key is a
 * `TypeError` (a misspelt option would otherwise be ignored without a word).
 */
export function checkOptions<T extends object>(value: T | undefined, field: string, allowed: readonly string[]): T {
  if (value === undefined || value === null) return {} as T;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`${field} must be an options object, not ${typeName(value)}`);
  }
  for (const k of Object.keys(value)) {
    if (!allowed.includes(k)) {
      const hint = MS_HINTS[k];
      const more = hint && allowed.includes(hint) ? ` (durations are milliseconds: use ${hint})` : "";
      throw new TypeError(`${field}: unknown option ${JSON.stringify(k)}${more}; known: ${allowed.join(", ")}`);
    }
  }
  return value;
}
