/**
 * HTTP responses and headers, duck-typed: what `report()`, `call()` and `op.complete()` read
 * from the response of whatever HTTP client the caller uses. No I/O except reading a fetch
 * body that nobody has read yet (from a clone, so the caller can still read it).
 */

import { checkStatus, typeName } from "./checks.js";

/** A header value as HTTP clients hand them out. */
export type HeaderValue = string | number | readonly (string | number)[] | undefined | null;

/**
 * Headers as a fetch `Headers`, a plain object (node/undici `IncomingHttpHeaders`, axios
 * `AxiosHeaders` or its `toJSON()`), a `Map`, or `[name, value]` pairs.
 */
export type HeadersLike =
  | { forEach(cb: (value: string, name: string) => void): void }
  | { toJSON(): object }
  | Readonly<Record<string, HeaderValue>>
  | ReadonlyMap<string, HeaderValue>
  | Iterable<readonly [string, HeaderValue]>;

/**
 * An HTTP response: a fetch `Response` (`status`), an undici or `node:http` response
 * (`statusCode`), an axios response (`status`, `headers` possibly `AxiosHeaders`), or
 * `{status, headers}`.
 */
export type ResponseLike =
  | { readonly status: number; readonly headers?: HeadersLike | undefined }
  | { readonly statusCode?: number | undefined; readonly headers: HeadersLike | undefined };

/**
 * Headers -> one string per lower-cased name; repeated names are joined with ", " as HTTP
 * allows (and as fetch's `Headers` does).
 */
export function normalizeHeaders(value: unknown, field = "headers"): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === undefined || value === null) return out;
  const bad = (): never => {
    throw new TypeError(`${field} must be Headers, an object of strings or [name, value] pairs, not ${typeName(value)}`);
  };
  if (typeof value !== "object") bad();
  const add = (name: unknown, v: unknown): void => {
    if (typeof name !== "string") throw new TypeError(`${field} names must be strings, not ${typeName(name)}`);
    if (v === undefined || v === null) return;
    if (Array.isArray(v)) {
      for (const x of v) add(name, x);
      return;
    }
    if (typeof v !== "string" && typeof v !== "number") {
      throw new TypeError(`${field}[${JSON.stringify(name)}] must be a string, not ${typeName(v)}`);
    }
    const key = name.toLowerCase();
    out[key] = key in out ? `${out[key]}, ${v}` : String(v);
  };
  const o = value as Record<string, unknown>;
  if (typeof o["forEach"] === "function" && typeof o["get"] === "function" && !(value instanceof Map)) {
    // fetch Headers (and look-alikes): forEach(value, name).
    (o as unknown as { forEach(cb: (v: unknown, k: unknown) => void): void }).forEach((v, k) => add(k, v));
    return out;
  }
  if (typeof o["toJSON"] === "function" && !(value instanceof Date)) {
    // axios AxiosHeaders: its toJSON() is the plain object of its headers.
    const plain = (o as unknown as { toJSON(): unknown }).toJSON();
    if (plain === null || typeof plain !== "object") bad();
    for (const [k, v] of Object.entries(plain as object)) add(k, v);
    return out;
  }
  if (value instanceof Map) {
    for (const [k, v] of value) add(k, v);
    return out;
  }
  if (Array.isArray(value) || (Symbol.iterator in o && typeof o[Symbol.iterator as unknown as string] === "function")) {
    for (const pair of value as Iterable<unknown>) {
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw new TypeError(`${field} must be [name, value] pairs, found ${typeName(pair)}`);
      }
      add(pair[0], pair[1]);
    }
    return out;
  }
  for (const [k, v] of Object.entries(o)) add(k, v);
  return out;
}

/** The HTTP status of a response: `statusCode` (undici, node:http) or `status` (fetch, axios). */
export function responseStatus(response: unknown): number {
  if (response !== null && typeof response === "object") {
    const r = response as Record<string, unknown>;
    for (const attr of ["statusCode", "status"]) {
      const v = r[attr];
      if (typeof v === "number") return checkStatus(v, `response.${attr}`);
    }
  }
  throw new TypeError(
    `response must have a numeric status or statusCode (fetch, undici, axios, {status, headers}), not ${typeName(response)}`,
  );
}

/** The headers of a response, normalized. */
export function responseHeaders(response: unknown): Record<string, string> {
  if (response === null || typeof response !== "object") return {};
  return normalizeHeaders((response as Record<string, unknown>)["headers"], "response.headers");
}

/** Whether `obj` looks like an HTTP response (a numeric status and headers). */
export function isResponseLike(obj: unknown): boolean {
  if (obj === null || typeof obj !== "object") return false;
  try {
    responseStatus(obj);
  } catch {
    return false;
  }
  return "headers" in obj;
}

/**
 * The response an HTTP error carries: axios's and got's `error.response`, ky's
 * `HTTPError.response` (a fetch Response), or the error itself when it has a status and
 * headers (undici's `ResponseStatusCodeError`). `undefined` when it carries none.
 */
export function responseOfError(e: unknown): ResponseLike | undefined {
  if (e === null || typeof e !== "object") return undefined;
  const r = (e as Record<string, unknown>)["response"];
  if (isResponseLike(r)) return r as ResponseLike;
  if (isResponseLike(e)) return e as ResponseLike;
  return undefined;
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "ERR_NETWORK",
]);

/**
 * Whether an error means "no answer" from the upstream: a refused or reset connection, a DNS
 * failure, a timeout (`AbortSignal.timeout()`'s `TimeoutError`), fetch's `TypeError: fetch
 * failed`, undici's `UND_ERR_*` socket errors, axios's network errors.
 */
export function isNetworkError(e: unknown): boolean {
  for (let cur = e, depth = 0; cur !== null && typeof cur === "object" && depth < 5; depth++) {
    const o = cur as { name?: unknown; code?: unknown; message?: unknown; cause?: unknown };
    if (o.name === "TimeoutError") return true;
    if (typeof o.code === "string" && (NETWORK_CODES.has(o.code) || o.code.startsWith("UND_ERR_"))) return true;
    if (cur instanceof TypeError && o.message === "fetch failed") return true;
    cur = o.cause;
  }
  return false;
}

const encoder = new TextEncoder();

/**
 * The body of a response as bytes, for storing under an idempotency key: a fetch `Response`
 * nobody has read yet is read from a clone; an axios response's `data` (a string, bytes, or
 * parsed JSON, stored as JSON); a `body` string or bytes. Empty when unknown (a body already
 * consumed: pass it to `complete()` as `body`).
 */
export async function bodyOf(response: unknown): Promise<Uint8Array> {
  if (response === null || typeof response !== "object") return new Uint8Array();
  const r = response as Record<string, unknown>;
  if (typeof r["bodyUsed"] === "boolean" && typeof r["clone"] === "function") {
    if (r["bodyUsed"]) return new Uint8Array();
    const clone = (r as unknown as { clone(): { arrayBuffer(): Promise<ArrayBuffer> } }).clone();
    return new Uint8Array(await clone.arrayBuffer());
  }
  for (const attr of ["data", "body"]) {
    const b = bytesOf(r[attr]);
    if (b !== undefined) return b;
  }
  if ("data" in r && r["data"] !== undefined && typeof r["data"] === "object") {
    try {
      return encoder.encode(JSON.stringify(r["data"]));
    } catch {
      return new Uint8Array();
    }
  }
  return new Uint8Array();
}

/** A string or bytes as bytes; `undefined` for anything else. */
export function bytesOf(v: unknown): Uint8Array | undefined {
  if (typeof v === "string") return encoder.encode(v);
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (v instanceof ArrayBuffer) return new Uint8Array(v.slice(0));
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  return undefined;
}
