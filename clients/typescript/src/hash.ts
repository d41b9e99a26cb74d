/**
 * Stable hashing: cache keys and idempotency fingerprints that are the same in every
 * process, runtime and version. A value is turned into a canonical JSON text (object keys
 * sorted, no whitespace) and hashed with SHA-256 (WebCrypto, so it runs in browsers too).
 *
 * For JSON-like values (strings, booleans, null, integers, ordinary decimals, arrays, plain
 * objects) the text is byte for byte what the Python client's `stable_hash` hashes, so both
 * clients agree on the hash of the same data.
 */

import { typeName } from "./checks.js";

/** The canonical text of a value; `TypeError` for what has no stable form. */
export function canonicalJson(value: unknown): string {
  return write(canonical(value, 0));
}

/** SHA-256 (hex) of the canonical JSON of `value`; object key order does not matter. */
export async function stableHash(value: unknown): Promise<string> {
  return sha256Hex(canonicalJson(value));
}

export async function sha256Hex(text: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A canonical value: what `write` prints. Tagged objects (`$bytes`…) mark non-JSON types. */
type Canon = null | boolean | string | number | bigint | Canon[] | { [k: string]: Canon };

const MAX_DEPTH = 100;

function canonical(v: unknown, depth: number): Canon {
  if (depth > MAX_DEPTH) throw new TypeError("cannot hash a value nested more than 100 deep (a cycle?)");
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case "boolean":
    case "string":
    case "bigint":
      return v;
    case "number":
      if (Number.isNaN(v)) return { $float: "nan" };
      if (!Number.isFinite(v)) return { $float: v > 0 ? "inf" : "-inf" };
      return v;
    case "object":
      break;
    default:
      throw unhashable(v);
  }
  if (Array.isArray(v)) return v.map((x) => canonical(x, depth + 1));
  if (v instanceof Uint8Array || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    const bytes =
      v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    return { $bytes: base64(bytes) };
  }
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new TypeError("cannot hash an invalid Date");
    return { $time: v.toISOString() };
  }
  if (v instanceof Map) {
    const keys = [...v.keys()];
    const out: Record<string, Canon> = {};
    if (keys.every((k) => typeof k === "string")) {
      for (const [k, x] of v) out[k as string] = canonical(x, depth + 1);
      return out;
    }
    for (const [k, x] of v) {
      if (k !== null && !["string", "number", "boolean", "bigint"].includes(typeof k)) {
        throw new TypeError(`cannot hash a Map key of type ${typeName(k)}`);
      }
      out[typeof k === "string" ? k : write(canonical(k, depth + 1))] = canonical(x, depth + 1);
    }
    return { $map: out };
  }
  if (v instanceof Set) {
    const items = [...v].map((x) => canonical(x, depth + 1));
    return { $set: items.map((x) => [write(x), x] as const).sort((a, b) => cmp(a[0], b[0])).map((p) => p[1]) };
  }
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) throw unhashable(v);
  const out: Record<string, Canon> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined) continue; // as JSON.stringify: an absent property
    out[k] = canonical(x, depth + 1);
  }
  return out;
}

function unhashable(v: unknown): TypeError {
  return new TypeError(
    `cannot hash a ${typeName(v)} into a stable key: use JSON-like values (string, number, ` +
      "bigint, boolean, null, arrays, plain objects, Uint8Array, Date, Map, Set)",
  );
}

/** Code point order, as Python sorts str keys (JS's default sort compares UTF-16 units). */
function cmp(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done && y.done ? 0 : x.done ? -1 : 1;
    const d = (x.value.codePointAt(0) ?? 0) - (y.value.codePointAt(0) ?? 0);
    if (d !== 0) return d;
  }
}

function write(c: Canon): string {
  if (c === null) return "null";
  switch (typeof c) {
    case "boolean":
      return c ? "true" : "false";
    case "string":
      return JSON.stringify(c);
    case "bigint":
      return c.toString();
    case "number":
      return number(c);
    default:
      break;
  }
  if (Array.isArray(c)) return `[${c.map(write).join(",")}]`;
  const keys = Object.keys(c).sort(cmp);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${write((c as Record<string, Canon>)[k] as Canon)}`).join(",")}}`;
}

/**
 * A number as Python's json prints it: integers as integers (an int in Python), other
 * values as Python's float repr (shortest round trip; exponent form below 1e-4, with at
 * least two exponent digits).
 */
function number(n: number): string {
  if (Number.isInteger(n)) return Number.isSafeInteger(n) ? String(n === 0 ? 0 : n) : BigInt(n).toString();
  if (Math.abs(n) < 1e-4) {
    const [mant, exp] = n.toExponential().split("e") as [string, string];
    const sign = exp.startsWith("-") ? "-" : "+";
    const digits = exp.replace(/^[+-]/, "").padStart(2, "0");
    return `${mant}e${sign}${digits}`;
  }
  return String(n);
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
