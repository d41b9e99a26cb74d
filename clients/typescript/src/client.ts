/**
 * The client: one object per process (or per worker), over gRPC or the Connect protocol.
 *
 * The request flow of a worker: `acquire` (or `withPermit`, `call`) asks permitd for a permit
 * before each upstream call; the upstream's answer goes back with `permit.report(response)`,
 * so permitd learns the upstream's limits from its headers and, on a 429, pauses every
 * worker; a call that never happened is released with a refund. Every method checks its
 * arguments before any RPC (TypeError / RangeError) and maps RPC failures to the classes of
 * `errors.ts`.
 */

import { create } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client as RpcClient, type Transport } from "@connectrpc/connect";

import {
  checkBool,
  checkCost,
  checkFunction,
  checkInt,
  checkKey,
  checkMs,
  checkName,
  checkOptions,
  checkPrefix,
  checkStatus,
  byteLength,
  MAX_FINGERPRINT_BYTES,
  MAX_NAME_BYTES,
  typeName,
  U32_MAX,
} from "./checks.js";
import { dateOf, denialReasonName, duration, idemStateName, msOf, numMap, outcomeOf, quotaOf, resourceMessage, resourceOf, storedOf, summaryOf } from "./convert.js";
import { IdempotencyConflict, IdempotencyInProgress, mapRpcError, NotFound, PermitDenied, PermitdError, RetriesExhausted } from "./errors.js";
import { Cache } from "./gen/permitd/v1/cache_pb.js";
import * as cachePb from "./gen/permitd/v1/cache_pb.js";
import { Idempotency } from "./gen/permitd/v1/idempotency_pb.js";
import * as idemPb from "./gen/permitd/v1/idempotency_pb.js";
import { Permits } from "./gen/permitd/v1/permits_pb.js";
import * as permitsPb from "./gen/permitd/v1/permits_pb.js";
import { Quotas } from "./gen/permitd/v1/quotas_pb.js";
import * as quotasPb from "./gen/permitd/v1/quotas_pb.js";
import { stableHash } from "./hash.js";
import { isNetworkError, normalizeHeaders, responseHeaders, responseOfError, responseStatus, type HeadersLike, type ResponseLike } from "./http.js";
import { Idempotent } from "./idempotent.js";
import { MAX_ANSWERED_AGO_MS, Permit, type Cost, type PermitHost, type Report } from "./permit.js";
import { ServerStream } from "./stream.js";
import { nodeTransport, type OwnedTransport } from "./transport.js";
import type { BackoffAdvice, Outcome, QuotaUpdate, Resource, ResourceSpec, ResourceSummary } from "./types.js";

export const DEFAULT_TARGET = "http://127.0.0.1:50051";
export const TARGET_ENV = "PERMITD_TARGET";
export const TOKEN_ENV = "PERMITD_TOKEN";
export const TENANT_HEADER = "x-permitd-tenant";
/** Most partitions a summary names (`top`). */
export const MAX_TOP = 100;
/** Most partitions per page of `partitions()`. */
export const MAX_PAGE_SIZE = 1000;

export interface ClientOptions {
  /**
   * permitd's URL (`http://host:port`, `https://…`) or `host:port`; default
   * `$PERMITD_TARGET`, else `http://127.0.0.1:50051`. Ignored with a `Transport` of your own.
   */
  readonly target?: string | undefined;
  /**
   * `"grpc"` (default; HTTP/2), `"connect"` (the Connect protocol, HTTP/1.1 unless
   * `httpVersion: "2"`), or a Connect `Transport` you made (browsers, edge runtimes:
   * `@connectrpc/connect-web`'s `createConnectTransport`, or one with your own interceptors).
   */
  readonly transport?: "grpc" | "connect" | Transport | undefined;
  /** Connect over Node.js only: "1.1" (default) or "2". */
  readonly httpVersion?: "1.1" | "2" | undefined;
  /** Connect over Node.js only: protobuf bodies instead of JSON (default false: JSON, as curl and browsers see it). */
  readonly useBinaryFormat?: boolean | undefined;
  /** Sent as `authorization: Bearer <token>` on every call; default `$PERMITD_TOKEN`. */
  readonly token?: string | undefined;
  /** The tenant an operator principal (tenant `*`) acts for. */
  readonly tenant?: string | undefined;
  /** Bounds each RPC (an acquire gets its `maxWaitMs` on top); default 10 000. */
  readonly timeoutMs?: number | undefined;
  /** Who asks (free text, up to 200 bytes; for permitd's logs and dashboards). */
  readonly clientId?: string | undefined;
  /** Where the client says what it could not do in the background (default `console`). */
  readonly logger?: { warn(message: string): void } | undefined;
}

/** Arguments of a permit. */
export interface AcquireOptions {
  /** Dimension -> amount (`{tokens: 1200}`); `requests` counts 1 unless given. */
  readonly cost?: Cost | undefined;
  /** Sub-key of a per-partition resource (`user:42`). */
  readonly partition?: string | undefined;
  /** How long to wait in permitd's queue; absent or 0: answer at once. */
  readonly maxWaitMs?: number | undefined;
  /** Higher is served first; FIFO within one priority. */
  readonly priority?: number | undefined;
  /** How long the concurrency slot is held before it is reclaimed (default: the resource's lease). */
  readonly leaseMs?: number | undefined;
}

/** What `call()`'s function gets. */
export interface CallContext {
  /** 1 for the first try. */
  readonly attempt: number;
}

export interface CallOptions_<R> extends Omit<AcquireOptions, "leaseMs"> {
  /** Stop before permitd's policy does (at least 1). */
  readonly maxAttempts?: number | undefined;
  /** The cost really used, read from the response: reconciled on the report. */
  readonly actualCost?: ((response: R) => Cost) | undefined;
  /**
   * Which errors of `fn` are "no answer" and retried as permitd advises; default: network
   * errors (refused, reset, DNS, timeouts) and errors that carry an HTTP response (axios's,
   * got's, ky's), whose response is reported. Other errors refund the permit and propagate.
   */
  readonly retryOn?: ((error: unknown) => boolean) | undefined;
  /** Aborts the wait between attempts. */
  readonly signal?: AbortSignal | undefined;
}

export interface IdempotentOptions {
  /**
   * Identifies the request, so a key reused for another request throws
   * `IdempotencyConflict`: a string (as is), or any JSON-like value (hashed).
   */
  readonly fingerprint?: unknown;
  /** How long the record is kept (server default 24 h). */
  readonly ttlMs?: number | undefined;
  /** How long you may hold the key in progress (server default 60 s). */
  readonly lockTtlMs?: number | undefined;
  /** How long to wait for another worker holding the key before `IdempotencyInProgress` (default 30 000). */
  readonly waitMs?: number | undefined;
}

export interface CachedOptions {
  /** The function's name in the key (default `fn.name`; give one: minifiers rename functions). */
  readonly name?: string | undefined;
  /** Value -> bytes (default JSON). */
  readonly encode?: ((value: unknown) => Uint8Array) | undefined;
  /** Bytes -> value (default JSON). */
  readonly decode?: ((data: Uint8Array) => unknown) | undefined;
}

/** A function whose results are cached in permitd. */
export type CachedFunction<A extends unknown[], R> = ((...args: A) => Promise<R>) & {
  /** The cache key of one call (a SHA-256 of the name and the arguments). */
  cacheKey(...args: A): Promise<string>;
  /** Remove one call's entry; whether one was removed. */
  invalidate(...args: A): Promise<boolean>;
};

export interface WatchOptions {
  /** At most one update per bucket per this interval. */
  readonly minIntervalMs?: number | undefined;
  /** Only partitions whose name starts with this (leaves out the resource-wide buckets). */
  readonly partitionPrefix?: string | undefined;
  /** Only the resource-wide buckets. */
  readonly resourceBucketsOnly?: boolean | undefined;
  /** Ends the stream. */
  readonly signal?: AbortSignal | undefined;
}

export interface WatchSummariesOptions {
  /** Partitions under most pressure to name per summary (1-100, default 10). */
  readonly top?: number | undefined;
  /** At most one summary per resource per this interval (server default 1 s, at least 250 ms). */
  readonly minIntervalMs?: number | undefined;
  readonly partitionPrefix?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

const ACQUIRE_KEYS = ["cost", "partition", "maxWaitMs", "priority", "leaseMs"] as const;
const CALL_KEYS = ["cost", "partition", "maxWaitMs", "priority", "maxAttempts", "actualCost", "retryOn", "signal"] as const;
const CLIENT_KEYS = ["target", "transport", "httpVersion", "useBinaryFormat", "token", "tenant", "timeoutMs", "clientId", "logger"] as const;

interface AcquireArgs {
  readonly resource: string;
  readonly partition: string;
  readonly cost: Record<string, bigint>;
  readonly maxWaitMs: number | undefined;
  readonly priority: number;
  readonly leaseMs: number | undefined;
}

function acquireArgs(resource: unknown, o: AcquireOptions): AcquireArgs {
  return {
    resource: checkName(resource, "resource"),
    partition: checkName(o.partition ?? "", "partition", false),
    cost: checkCost(o.cost, "cost"),
    maxWaitMs: checkMs(o.maxWaitMs, "maxWaitMs"),
    priority: o.priority === undefined ? 0 : checkInt(o.priority, "priority", -(2 ** 31), 2 ** 31 - 1),
    leaseMs: checkMs(o.leaseMs, "leaseMs", { allowZero: false }),
  };
}

function env(name: string): string | undefined {
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const v = p?.env?.[name];
  return v ? v : undefined;
}

/** `host:port` or a URL -> the base URL. */
function baseUrlOf(target: unknown): string {
  const t = target === undefined ? (env(TARGET_ENV) ?? DEFAULT_TARGET) : target;
  if (typeof t !== "string") throw new TypeError(`target must be a string such as "http://127.0.0.1:50051", not ${typeName(t)}`);
  if (!t.trim()) throw new RangeError("target must not be empty");
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(t) ? t : `http://${t}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new RangeError(`target ${JSON.stringify(t)} is not a URL or host:port`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new RangeError(`target must be http:// or https://, not ${url.protocol}`);
  }
  return withScheme.replace(/\/+$/, "");
}

function isTransport(v: unknown): v is Transport {
  return v !== null && typeof v === "object" && typeof (v as Transport).unary === "function" && typeof (v as Transport).stream === "function";
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

const isFailure = (status: number): boolean => status === 0 || status >= 400;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

function jsonEncode(value: unknown): Uint8Array {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw new TypeError(`cached value is not JSON-serialisable (pass encode/decode): ${e instanceof Error ? e.message : String(e)}`);
  }
  if (text === undefined) throw new TypeError(`cached value ${typeName(value)} is not JSON-serialisable (pass encode/decode)`);
  return textEncoder.encode(text);
}

function jsonDecode(data: Uint8Array): unknown {
  return JSON.parse(textDecoder.decode(data));
}

interface Rpcs {
  readonly permits: RpcClient<typeof Permits>;
  readonly quotas: RpcClient<typeof Quotas>;
  readonly idempotency: RpcClient<typeof Idempotency>;
  readonly cache: RpcClient<typeof Cache>;
}

/**
 * A permitd client. Constructing one makes no call; the connection opens on first use and
 * `close()` ends it.
 */
export class Client {
  /** The base URL (informational when you passed a `Transport`). */
  readonly target: string;
  readonly timeoutMs: number;
  readonly clientId: string;
  readonly #headers: Record<string, string>;
  readonly #logger: { warn(message: string): void };
  #rpcs: Promise<Rpcs> | undefined;
  #owned: Promise<OwnedTransport> | undefined;
  readonly #open: () => Promise<Transport>;

  constructor(options?: ClientOptions) {
    const o = checkOptions(options, "client options", CLIENT_KEYS);
    this.target = baseUrlOf(o.target);
    this.timeoutMs = checkMs(o.timeoutMs ?? 10_000, "timeoutMs", { allowZero: false }) as number;
    const clientId = o.clientId ?? "";
    if (typeof clientId !== "string") throw new TypeError(`clientId must be a string, not ${typeName(clientId)}`);
    if (byteLength(clientId) > MAX_NAME_BYTES) throw new RangeError("clientId must be at most 200 bytes");
    this.clientId = clientId;
    this.#logger = o.logger ?? { warn: (m: string) => console.warn(`permitd: ${m}`) };
    if (typeof this.#logger.warn !== "function") throw new TypeError("logger must have a warn(message) method");
    const headers: Record<string, string> = {};
    const token = o.token === undefined ? env(TOKEN_ENV) : o.token;
    if (token !== undefined) {
      // eslint-disable-next-line no-control-regex
      if (typeof token !== "string" || !token.trim() || !/^[\x20-\x7e]+$/.test(token)) {
        throw new RangeError("token must be a non-empty ASCII string (`permitd token new` prints one)");
      }
      headers["authorization"] = `Bearer ${token.trim()}`;
    }
    if (o.tenant !== undefined) headers[TENANT_HEADER] = checkName(o.tenant, "tenant");
    this.#headers = headers;
    const t = o.transport ?? "grpc";
    if (isTransport(t)) {
      if (o.httpVersion !== undefined || o.useBinaryFormat !== undefined) {
        throw new TypeError("httpVersion and useBinaryFormat are for the built-in transports; set them on your Transport");
      }
      this.#open = () => Promise.resolve(t);
    } else {
      if (t !== "grpc" && t !== "connect") {
        throw new TypeError(`transport must be "grpc", "connect" or a Connect Transport, not ${JSON.stringify(t)}`);
      }
      const httpVersion = o.httpVersion ?? (t === "grpc" ? "2" : "1.1");
      if (httpVersion !== "1.1" && httpVersion !== "2") throw new RangeError(`httpVersion must be "1.1" or "2"`);
      if (t === "grpc" && httpVersion !== "2") throw new RangeError("gRPC runs over HTTP/2 only");
      const useBinaryFormat = o.useBinaryFormat === undefined ? false : checkBool(o.useBinaryFormat, "useBinaryFormat");
      const baseUrl = this.target;
      this.#open = async () => {
        const owned = (this.#owned ??= nodeTransport({ kind: t, baseUrl, httpVersion, useBinaryFormat }));
        try {
          return (await owned).transport;
        } catch (e) {
          if (this.#owned === owned) this.#owned = undefined; // retried on the next call
          throw e;
        }
      };
    }
  }

  /** End the connections this client opened (a `Transport` of your own is yours to close). */
  async close(): Promise<void> {
    const owned = this.#owned;
    this.#owned = undefined;
    this.#rpcs = undefined;
    if (owned !== undefined) (await owned).close();
  }

  toString(): string {
    return `Client(${JSON.stringify(this.target)})`;
  }

  // ------------------------------------------------------------ plumbing

  #clients(): Promise<Rpcs> {
    this.#rpcs ??= this.#open().then((tr) => ({
      permits: createClient(Permits, tr),
      quotas: createClient(Quotas, tr),
      idempotency: createClient(Idempotency, tr),
      cache: createClient(Cache, tr),
    }));
    const p = this.#rpcs;
    p.catch(() => {
      if (this.#rpcs === p) this.#rpcs = undefined; // a failed load is retried on the next call
    });
    return p;
  }

  #callOptions(timeoutMs: number | undefined): CallOptions {
    return { headers: this.#headers, timeoutMs: timeoutMs ?? this.timeoutMs };
  }

  /** A stream's options: no deadline (it runs until closed), the stream's signal. */
  #streamOptions(signal: AbortSignal): CallOptions {
    return { headers: this.#headers, signal };
  }

  async #rpc<T>(what: string, f: (c: Rpcs, o: CallOptions) => Promise<T>, timeoutMs?: number): Promise<T> {
    try {
      return await f(await this.#clients(), this.#callOptions(timeoutMs));
    } catch (e) {
      throw mapRpcError(e, what);
    }
  }

  /** What permits settle through (kept off the client's public surface). */
  readonly #host: PermitHost = {
    reportPermit: (id, rep) => this.#reportPermit(id, rep),
    releasePermit: (id, refund) => this.#releasePermit(id, refund),
    warn: (m) => this.#warn(m),
  };

  #warn(message: string): void {
    try {
      this.#logger.warn(message);
    } catch {
      // a logger that throws must not break settling
    }
  }

  async #reportPermit(permitId: string, rep: Report): Promise<Outcome> {
    const req = create(permitsPb.ReportOutcomeRequestSchema, {
      permitId,
      statusCode: rep.status,
      headers: rep.headers,
      actualCost: rep.actualCost,
      attempt: rep.attempt,
    });
    if (rep.answeredAt !== undefined) {
      // How long ago, as of sending: the server reads instant resets as of the answer.
      req.answeredAgo = duration(Math.min(Math.max(performance.now() - rep.answeredAt, 0), MAX_ANSWERED_AGO_MS));
    }
    const r = await this.#rpc("Permits.ReportOutcome", (c, o) => c.permits.reportOutcome(req, o));
    return outcomeOf(r, rep.status);
  }

  async #releasePermit(permitId: string, refund: boolean): Promise<void> {
    try {
      await this.#rpc("Permits.ReleasePermit", (c, o) => c.permits.releasePermit({ permitId, refund }, o));
    } catch (e) {
      if (!(e instanceof NotFound)) throw e; // already released or its lease ended: harmless
    }
  }

  async #acquire(a: AcquireArgs): Promise<Permit> {
    const req = create(permitsPb.AcquirePermitRequestSchema, {
      resource: a.resource,
      partition: a.partition,
      cost: a.cost,
      priority: a.priority,
      clientId: this.clientId,
    });
    if (a.maxWaitMs) req.maxWait = duration(a.maxWaitMs);
    if (a.leaseMs !== undefined) req.lease = duration(a.leaseMs);
    // The deadline is the queue wait plus the per-call timeout, so the server answers
    // QUEUE_TIMEOUT before the deadline cuts the call.
    const r = await this.#rpc("Permits.AcquirePermit", (c, o) => c.permits.acquirePermit(req, o), (a.maxWaitMs ?? 0) + this.timeoutMs);
    if (!r.granted) throw new PermitDenied(a.resource, a.partition, denialReasonName(r.denialReason), msOf(r.retryAfter));
    return new Permit(this.#host, {
      resource: a.resource,
      partition: a.partition,
      cost: a.cost,
      permitId: r.permitId,
      leaseExpiresAt: dateOf(r.leaseExpiresAt),
      waitedMs: msOf(r.waited),
      remaining: Object.freeze(numMap(r.remaining)),
    });
  }

  // ------------------------------------------------------------ permits

  /**
   * Ask for a permit, waiting up to `maxWaitMs` in permitd's queue. Throws `PermitDenied`
   * (with `retryAfterMs` and `reason`) when not granted. Settle it with `report()` or
   * `release()`.
   */
  async acquire(resource: string, options?: AcquireOptions): Promise<Permit> {
    return this.#acquire(acquireArgs(resource, checkOptions(options, "acquire options", ACQUIRE_KEYS)));
  }

  /**
   * Acquire, run `fn(permit)`, settle: inside, `await p.report(response)`. A permit `fn` did
   * not report is released when `fn` ends: without a refund when it returned (the call was
   * made), with a refund when it threw (the call never happened), unless the error carries
   * an HTTP response (axios's `error.response`, …), which is reported instead. Returns what
   * `fn` returned; rethrows what it threw.
   */
  withPermit<T>(resource: string, fn: (permit: Permit) => Promise<T> | T): Promise<T>;
  withPermit<T>(resource: string, options: AcquireOptions, fn: (permit: Permit) => Promise<T> | T): Promise<T>;
  async withPermit<T>(
    resource: string,
    optionsOrFn: AcquireOptions | ((permit: Permit) => Promise<T> | T),
    maybeFn?: (permit: Permit) => Promise<T> | T,
  ): Promise<T> {
    const [options, fn] = typeof optionsOrFn === "function" ? [undefined, optionsOrFn] : [optionsOrFn, maybeFn];
    checkFunction(fn, "fn");
    const args = acquireArgs(resource, checkOptions(options, "withPermit options", ACQUIRE_KEYS));
    const p = await this.#acquire(args);
    let result: T;
    try {
      result = await (fn as (permit: Permit) => Promise<T> | T)(p);
    } catch (e) {
      await p.settle(true, e);
      throw e;
    }
    await p.settle(false);
    return result;
  }

  /**
   * Acquire -> `fn({attempt})` -> report, retrying as permitd advises.
   *
   * `fn` returns an HTTP response (fetch, undici, axios…). After each attempt permitd says
   * whether to retry and after how long (the upstream's Retry-After, else the resource's
   * backoff policy, never before a cooldown ends); `call` waits exactly that. It returns the
   * first response permitd does not advise retrying (a success, or an error such as a 404),
   * and throws `RetriesExhausted` (with `lastResponse`) once the policy's attempts, or
   * `maxAttempts`, are used up. Errors `retryOn` accepts are reported (their response, else
   * as "no answer", status 0) and retried the same way; others refund the permit and
   * propagate. `actualCost(response)` reconciles the cost. `maxWaitMs` defaults to 30 000.
   */
  async call<R>(resource: string, fn: (ctx: CallContext) => Promise<R> | R, options?: CallOptions_<R>): Promise<R> {
    checkFunction(fn, "fn");
    const o = checkOptions(options, "call options", CALL_KEYS);
    const acq = acquireArgs(resource, { ...o, maxWaitMs: o.maxWaitMs ?? 30_000 });
    const maxAttempts = o.maxAttempts === undefined ? undefined : checkInt(o.maxAttempts, "maxAttempts", 1, 2 ** 31);
    if (o.actualCost !== undefined) checkFunction(o.actualCost, "actualCost");
    if (o.retryOn !== undefined) checkFunction(o.retryOn, "retryOn");
    const retryOn = o.retryOn ?? ((e: unknown) => isNetworkError(e) || responseOfError(e) !== undefined);
    for (let attempt = 1; ; attempt++) {
      const p = await this.#acquire(acq);
      let resp: R | ResponseLike | undefined;
      let err: unknown;
      let threw = false;
      try {
        resp = await fn({ attempt });
      } catch (e) {
        if (!retryOn(e)) {
          await p.settle(true, e);
          throw e;
        }
        threw = true;
        err = e;
        resp = responseOfError(e);
      }
      if (resp !== undefined) {
        try {
          responseStatus(resp);
        } catch (e) {
          await p.settle(false); // the call was made: no refund
          throw new TypeError(`call(): fn must return an HTTP response (fetch, undici, axios, {status, headers}): ${(e as Error).message}`);
        }
      }
      const used = o.actualCost !== undefined && resp !== undefined && !threw ? o.actualCost(resp as R) : undefined;
      const outcome = await p.report(resp as ResponseLike | undefined, {
        ...(resp === undefined ? { status: 0 } : {}),
        ...(used !== undefined ? { actualCost: used } : {}),
        attempt,
      });
      const giveUp = maxAttempts !== undefined && attempt >= maxAttempts;
      if (outcome.retry && !giveUp) {
        await sleep(outcome.retryAfterMs, o.signal);
        continue;
      }
      if (
        outcome.retry ||
        (isFailure(outcome.status) &&
          (
            await this.computeBackoff(acq.resource, {
              attempt,
              status: outcome.status,
              ...(resp !== undefined ? { headers: responseHeaders(resp) } : {}),
            })
          ).giveUp)
      ) {
        throw new RetriesExhausted(acq.resource, attempt, outcome.status, resp, err);
      }
      if (threw) throw err;
      return resp as R;
    }
  }

  /** The resource's retry advice for a failed `attempt` (1 = the first try). */
  async computeBackoff(
    resource: string,
    options: { readonly attempt: number; readonly status: number; readonly headers?: HeadersLike; readonly partition?: string },
  ): Promise<BackoffAdvice> {
    const o = checkOptions(options, "computeBackoff options", ["attempt", "status", "headers", "partition"]);
    const req = create(permitsPb.ComputeBackoffRequestSchema, {
      resource: checkName(resource, "resource"),
      attempt: checkInt(o.attempt, "attempt", 1, U32_MAX),
      statusCode: checkStatus(o.status),
      headers: normalizeHeaders(o.headers),
      partition: checkName(o.partition ?? "", "partition", false),
    });
    const r = await this.#rpc("Permits.ComputeBackoff", (c, co) => c.permits.computeBackoff(req, co));
    return Object.freeze({ retry: r.retry, retryAfterMs: msOf(r.retryAfter), giveUp: r.giveUp });
  }

  // ------------------------------------------------------------ idempotency

  /**
   * Run `fn(op)` under an idempotency key: claims the key first (waiting up to `waitMs` while
   * another worker holds it, then `IdempotencyInProgress`). In `fn`, `op.replayed` true means
   * the call was already made (`op.result` is its stored result); else make the call and
   * `await op.complete(response)`. Returning without completing completes the key with an
   * empty result; throwing abandons it so a later attempt may run. A key used before with
   * another fingerprint throws `IdempotencyConflict`. Returns what `fn` returned.
   */
  idempotent<T>(key: string, fn: (op: Idempotent) => Promise<T> | T): Promise<T>;
  idempotent<T>(key: string, options: IdempotentOptions, fn: (op: Idempotent) => Promise<T> | T): Promise<T>;
  async idempotent<T>(
    key: string,
    optionsOrFn: IdempotentOptions | ((op: Idempotent) => Promise<T> | T),
    maybeFn?: (op: Idempotent) => Promise<T> | T,
  ): Promise<T> {
    const [options, fnIn] = typeof optionsOrFn === "function" ? [undefined, optionsOrFn] : [optionsOrFn, maybeFn];
    checkFunction(fnIn, "fn");
    const fn = fnIn as (op: Idempotent) => Promise<T> | T;
    const o = checkOptions(options, "idempotent options", ["fingerprint", "ttlMs", "lockTtlMs", "waitMs"]);
    const k = checkKey(key, "key");
    const fingerprint = await fingerprintOf(o.fingerprint);
    const ttl = checkMs(o.ttlMs, "ttlMs", { allowZero: false });
    const lockTtl = checkMs(o.lockTtlMs, "lockTtlMs", { allowZero: false });
    const wait = checkMs(o.waitMs ?? 30_000, "waitMs") as number;
    const op = new Idempotent(
      {
        complete: async (req) => {
          await this.#rpc("Idempotency.Complete", (c, co) => c.idempotency.complete(req, co));
        },
        abandon: async (req) => {
          await this.#rpc("Idempotency.Abandon", (c, co) => c.idempotency.abandon(req, co));
        },
      },
      k,
      fingerprint,
    );
    const req = create(idemPb.BeginRequestSchema, { key: k, fingerprint });
    if (ttl !== undefined) req.ttl = duration(ttl);
    if (lockTtl !== undefined) req.lockTtl = duration(lockTtl);
    const deadline = performance.now() + wait;
    for (;;) {
      const r = await this.#rpc("Idempotency.Begin", (c, co) => c.idempotency.begin(req, co));
      const state = idemStateName(r.state);
      if (state === "ACQUIRED") {
        op.lockToken = r.lockToken;
        break;
      }
      if (state === "COMPLETED") {
        op.replayed = true;
        op.completed = true;
        op.result = r.result ? storedOf(r.result) : storedOf(create(idemPb.StoredResultSchema));
        break;
      }
      if (state === "FINGERPRINT_MISMATCH") throw new IdempotencyConflict(k);
      if (state !== "IN_PROGRESS") throw new PermitdError(`idempotency key ${JSON.stringify(k)}: unexpected state ${state}`);
      const retryAfter = Math.max(msOf(r.retryAfter), 10);
      const left = deadline - performance.now();
      if (left <= 0) throw new IdempotencyInProgress(k, retryAfter);
      await sleep(Math.min(retryAfter, left));
    }
    let result: T;
    try {
      result = await fn(op);
    } catch (e) {
      if (!op.completed) {
        try {
          await op.abandon();
        } catch (ae) {
          this.#warn(`could not abandon idempotency key ${JSON.stringify(k)}: ${ae instanceof Error ? ae.message : String(ae)}`);
        }
      }
      throw e;
    }
    if (!op.completed) await op.complete(undefined, { status: 0 });
    return result;
  }

  // ------------------------------------------------------------ cache

  /** The live value under `key`, or `undefined`. */
  async cacheGet(namespace: string, key: string): Promise<Uint8Array | undefined> {
    const req = create(cachePb.CacheGetRequestSchema, {
      namespace: checkKey(namespace, "namespace", MAX_NAME_BYTES),
      key: checkKey(key, "key"),
    });
    const r = await this.#rpc("Cache.Get", (c, o) => c.cache.get(req, o));
    return r.found ? r.value : undefined;
  }

  /** Store `value` (bytes, or a string stored as UTF-8) under `key` for `ttlMs` (absent: the server's default). */
  async cachePut(namespace: string, key: string, value: Uint8Array | string, ttlMs?: number): Promise<void> {
    if (!(value instanceof Uint8Array) && typeof value !== "string") {
      throw new TypeError(`value must be a Uint8Array or a string, not ${typeName(value)}`);
    }
    const req = create(cachePb.CachePutRequestSchema, {
      namespace: checkKey(namespace, "namespace", MAX_NAME_BYTES),
      key: checkKey(key, "key"),
      value: typeof value === "string" ? textEncoder.encode(value) : value,
    });
    const t = checkMs(ttlMs, "ttlMs", { allowZero: false });
    if (t !== undefined) req.ttl = duration(t);
    await this.#rpc("Cache.Put", (c, o) => c.cache.put(req, o));
  }

  /** Remove an entry; whether one was removed. */
  async cacheDelete(namespace: string, key: string): Promise<boolean> {
    const req = create(cachePb.CacheDeleteRequestSchema, {
      namespace: checkKey(namespace, "namespace", MAX_NAME_BYTES),
      key: checkKey(key, "key"),
    });
    return (await this.#rpc("Cache.Delete", (c, o) => c.cache.delete(req, o))).deleted;
  }

  /**
   * Wrap an async function so its results are cached in permitd under `namespace` for
   * `ttlMs` (undefined: the server's default). The key is a SHA-256 of the function's name
   * and its arguments in a canonical JSON form (object key order does not matter), so it is
   * the same in every process; arguments with no stable form throw TypeError before any
   * call. Values are stored as JSON unless `encode`/`decode` say otherwise. The wrapper has
   * `cacheKey(...args)` and `invalidate(...args)`.
   */
  cached<A extends unknown[], R>(
    namespace: string,
    ttlMs: number | undefined,
    fn: (...args: A) => Promise<R> | R,
    options?: CachedOptions,
  ): CachedFunction<A, R> {
    const ns = checkKey(namespace, "namespace", MAX_NAME_BYTES);
    const ttl = checkMs(ttlMs, "ttlMs", { allowZero: false });
    checkFunction(fn, "fn");
    const o = checkOptions(options, "cached options", ["name", "encode", "decode"]);
    if (o.name !== undefined && (typeof o.name !== "string" || !o.name)) throw new TypeError("name must be a non-empty string");
    const name = o.name ?? fn.name;
    if (!name) throw new TypeError("cached(): an anonymous function needs options.name (it is part of the cache key)");
    const encode = o.encode ?? jsonEncode;
    const decode = o.decode ?? jsonDecode;
    checkFunction(encode, "encode");
    checkFunction(decode, "decode");
    const keyOf = (args: A): Promise<string> => {
      const a = [...args];
      while (a.length > 0 && a[a.length - 1] === undefined) a.pop(); // f(x) and f(x, undefined) are one call
      return stableHash({ fn: name, args: a });
    };
    const wrapper = async (...args: A): Promise<R> => {
      const key = await keyOf(args);
      const hit = await this.cacheGet(ns, key);
      if (hit !== undefined) return decode(hit) as R;
      const value = await fn(...args);
      await this.cachePut(ns, key, encode(value), ttl);
      return value;
    };
    Object.defineProperty(wrapper, "name", { value: name });
    return Object.assign(wrapper, {
      cacheKey: (...args: A) => keyOf(args),
      invalidate: async (...args: A) => this.cacheDelete(ns, await keyOf(args)),
    });
  }

  // ------------------------------------------------------------ quotas

  /**
   * Quota updates of the resources whose name starts with `prefix`: first one per matching
   * bucket (the snapshot), then each change, at most one per bucket per `minIntervalMs`.
   * `for await (const u of client.watch("openai:"))`; `break`, `close()` or `signal` end it.
   */
  watch(prefix = "", options?: WatchOptions): ServerStream<QuotaUpdate> {
    const o = checkOptions(options, "watch options", ["minIntervalMs", "partitionPrefix", "resourceBucketsOnly", "signal"]);
    const req = create(quotasPb.WatchRequestSchema, { resourcePrefix: checkPrefix(prefix, "prefix") });
    const mi = checkMs(o.minIntervalMs, "minIntervalMs");
    if (mi !== undefined) req.minInterval = duration(mi);
    req.partitionPrefix = checkPrefix(o.partitionPrefix, "partitionPrefix");
    req.resourceBucketsOnly = o.resourceBucketsOnly === undefined ? false : checkBool(o.resourceBucketsOnly, "resourceBucketsOnly");
    if (req.partitionPrefix && req.resourceBucketsOnly) {
      throw new RangeError("partitionPrefix and resourceBucketsOnly exclude each other");
    }
    const signal = checkSignal(o.signal);
    return new ServerStream(
      async (s) => (await this.#clients()).quotas.watch(req, this.#streamOptions(s)),
      quotaOf,
      "Quotas.Watch",
      signal,
    );
  }

  /**
   * Summaries of the resources whose name starts with `prefix`: one of each first, then each
   * again when its figures changed, at most once per `minIntervalMs`. Ends as `watch` does.
   */
  watchSummaries(prefix = "", options?: WatchSummariesOptions): ServerStream<ResourceSummary> {
    const o = checkOptions(options, "watchSummaries options", ["top", "minIntervalMs", "partitionPrefix", "signal"]);
    const req = create(quotasPb.WatchSummariesRequestSchema, {
      resourcePrefix: checkPrefix(prefix, "prefix"),
      partitionPrefix: checkPrefix(o.partitionPrefix, "partitionPrefix"),
      top: checkInt(o.top ?? 10, "top", 1, MAX_TOP),
    });
    const mi = checkMs(o.minIntervalMs, "minIntervalMs");
    if (mi !== undefined) req.minInterval = duration(mi);
    const signal = checkSignal(o.signal);
    return new ServerStream(
      async (s) => (await this.#clients()).quotas.watchSummaries(req, this.#streamOptions(s)),
      summaryOf,
      "Quotas.WatchSummaries",
      signal,
    );
  }

  /** The current state of one bucket; `NotFound` for an unknown resource. */
  async getQuota(resource: string, options?: { readonly partition?: string }): Promise<QuotaUpdate> {
    const o = checkOptions(options, "getQuota options", ["partition"]);
    const req = create(quotasPb.GetQuotaRequestSchema, {
      resource: checkName(resource, "resource"),
      partition: checkName(o.partition ?? "", "partition", false),
    });
    return quotaOf(await this.#rpc("Quotas.GetQuota", (c, co) => c.quotas.getQuota(req, co)));
  }

  /**
   * One resource at a glance: its resource-wide bucket, totals over its live partitions whose
   * name starts with `prefix` and the `top` (1-100) of them under most pressure.
   */
  async getSummary(resource: string, options?: { readonly prefix?: string; readonly top?: number }): Promise<ResourceSummary> {
    const o = checkOptions(options, "getSummary options", ["prefix", "top"]);
    const req = create(quotasPb.GetSummaryRequestSchema, {
      resource: checkName(resource, "resource"),
      partitionPrefix: checkPrefix(o.prefix, "prefix"),
      top: checkInt(o.top ?? 10, "top", 1, MAX_TOP),
    });
    return summaryOf(await this.#rpc("Quotas.GetSummary", (c, co) => c.quotas.getSummary(req, co)));
  }

  /**
   * A resource's live partitions whose name starts with `prefix`, by name or most pressed
   * first, fetched page by page as the iteration needs them.
   */
  partitions(
    resource: string,
    options?: { readonly prefix?: string; readonly order?: "name" | "pressure"; readonly pageSize?: number },
  ): AsyncIterableIterator<QuotaUpdate> {
    const o = checkOptions(options, "partitions options", ["prefix", "order", "pageSize"]);
    const order = o.order ?? "name";
    if (order !== "name" && order !== "pressure") throw new RangeError(`order must be "name" or "pressure", not ${JSON.stringify(order)}`);
    const req = create(quotasPb.ListPartitionsRequestSchema, {
      resource: checkName(resource, "resource"),
      partitionPrefix: checkPrefix(o.prefix, "prefix"),
      order: order === "name" ? quotasPb.PartitionOrder.NAME : quotasPb.PartitionOrder.PRESSURE,
      pageSize: checkInt(o.pageSize ?? 100, "pageSize", 1, MAX_PAGE_SIZE),
    });
    const rpc = this.#rpc.bind(this);
    return (async function* pages(): AsyncGenerator<QuotaUpdate, void, undefined> {
      for (;;) {
        const r = await rpc("Quotas.ListPartitions", (c, co) => c.quotas.listPartitions(req, co));
        for (const u of r.partitions) yield quotaOf(u);
        if (!r.nextPageToken) return;
        req.pageToken = r.nextPageToken;
      }
    })();
  }

  /** Define or replace a resource (admin); returns it as stored. */
  async putResource(name: string, spec?: ResourceSpec): Promise<Resource> {
    const resource = resourceMessage(name, spec);
    const r = await this.#rpc("Quotas.PutResource", (c, o) => c.quotas.putResource({ resource }, o));
    if (!r.resource) throw new PermitdError("Quotas.PutResource: the answer holds no resource");
    return resourceOf(r.resource);
  }

  /** Remove a resource (admin); `NotFound` when it does not exist. */
  async deleteResource(name: string): Promise<void> {
    const n = checkName(name, "name");
    await this.#rpc("Quotas.DeleteResource", (c, o) => c.quotas.deleteResource({ name: n }, o));
  }

  /**
   * Clear what feedback imposed on a resource (admin): cooldowns, dimension blocks and learned
   * limits; its buckets start afresh. Returns the live buckets reset.
   */
  async resetResource(name: string): Promise<number> {
    const n = checkName(name, "name");
    const r = await this.#rpc("Quotas.ResetResource", (c, o) => c.quotas.resetResource({ name: n }, o));
    return Number(r.buckets);
  }
}

function checkSignal(s: unknown): AbortSignal | undefined {
  if (s === undefined) return undefined;
  if (typeof AbortSignal !== "undefined" && s instanceof AbortSignal) return s;
  throw new TypeError(`signal must be an AbortSignal, not ${typeName(s)}`);
}

/** An idempotency fingerprint: a string as given, anything else hashed; "" when absent. */
async function fingerprintOf(value: unknown): Promise<string> {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") {
    const n = byteLength(value);
    if (n > MAX_FINGERPRINT_BYTES) throw new RangeError(`fingerprint is ${n} bytes, at most ${MAX_FINGERPRINT_BYTES}`);
    return value;
  }
  return stableHash(value);
}
