/**
 * A granted permit and what settles it: `report()` (the upstream's status and headers, so
 * permitd learns its limits and pauses everyone on a 429) or `release()` (give it back,
 * refunded when the call was never made). The RPCs are the client's (`PermitHost`), so this
 * file holds no transport.
 */

import { checkBool, checkCost, checkInt, checkOptions, checkStatus, U32_MAX } from "./checks.js";
import { normalizeHeaders, responseHeaders, responseOfError, responseStatus, type HeadersLike, type ResponseLike } from "./http.js";
import type { Outcome } from "./types.js";

/** Dimension -> amount, as numbers or bigints (`{tokens: 1200}`). */
export type Cost = Readonly<Record<string, number | bigint>>;

/** What `report()` takes besides the response (each overrides what the response says). */
export interface ReportOptions {
  /** The HTTP status (0 = no answer: a timeout, a reset); overrides the response's. */
  readonly status?: number | undefined;
  /** Headers, merged over the response's. */
  readonly headers?: HeadersLike | undefined;
  /** Dimension -> amount really used: the difference to what was acquired is refunded or charged. */
  readonly actualCost?: Cost | undefined;
  /** 1 for a first try. */
  readonly attempt?: number | undefined;
  /**
   * `performance.now()` when the answer arrived, when you report later (after a streamed
   * body): permitd then reads reset instants as of the answer.
   */
  readonly answeredAt?: number | undefined;
}

/** A checked report, ready to send. */
export interface Report {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly actualCost: Record<string, bigint>;
  readonly attempt: number;
  readonly answeredAt: number | undefined;
}

/** The longest `answered_ago` the server takes (ms). */
export const MAX_ANSWERED_AGO_MS = 3600_000;

const REPORT_KEYS = ["status", "headers", "actualCost", "attempt", "answeredAt"] as const;

/** Check a report's arguments (a response, and/or explicit status and headers). */
export function reportArgs(response: ResponseLike | undefined, optsIn: ReportOptions | undefined): Report {
  const opts = checkOptions(optsIn, "report options", REPORT_KEYS);
  if (response === undefined && opts.status === undefined) {
    throw new TypeError("report() needs a response, or {status} (0 = no answer)");
  }
  const a = opts.answeredAt;
  if (a !== undefined && (typeof a !== "number" || !Number.isFinite(a))) {
    throw new TypeError("answeredAt must be a performance.now() reading");
  }
  const status = opts.status !== undefined ? checkStatus(opts.status) : responseStatus(response);
  const headers = response !== undefined ? responseHeaders(response) : {};
  if (opts.headers !== undefined) Object.assign(headers, normalizeHeaders(opts.headers));
  return {
    status,
    headers,
    actualCost: checkCost(opts.actualCost, "actualCost"),
    attempt: opts.attempt !== undefined ? checkInt(opts.attempt, "attempt", 1, U32_MAX) : 1,
    answeredAt: a,
  };
}

/** What a permit needs of the client. */
export interface PermitHost {
  reportPermit(permitId: string, rep: Report): Promise<Outcome>;
  releasePermit(permitId: string, refund: boolean): Promise<void>;
  warn(message: string): void;
}

/** What the server answered to a grant. */
export interface Grant {
  readonly resource: string;
  readonly partition: string;
  readonly cost: Readonly<Record<string, bigint>>;
  readonly permitId: string;
  readonly leaseExpiresAt: Date | undefined;
  readonly waitedMs: number;
  readonly remaining: Readonly<Record<string, number>>;
}

/**
 * A granted permit. Report the upstream's answer with {@link Permit.report}, or give it back
 * with {@link Permit.release}; `withPermit` does one of them for you when your function ends.
 */
export class Permit {
  readonly resource: string;
  readonly partition: string;
  /** What was acquired. */
  readonly cost: Readonly<Record<string, number>>;
  /** Opaque id of the permit. */
  readonly permitId: string;
  /** When the lease ends and the concurrency slot is reclaimed. */
  readonly leaseExpiresAt: Date | undefined;
  /** Time spent in permitd's queue. */
  readonly waitedMs: number;
  /** Dimension -> units left in the tightest limit after this grant. */
  readonly remaining: Readonly<Record<string, number>>;
  /** permitd's answer to the report, once reported. */
  outcome: Outcome | undefined = undefined;
  #done = false;
  readonly #host: PermitHost;

  constructor(host: PermitHost, g: Grant) {
    this.#host = host;
    this.resource = g.resource;
    this.partition = g.partition;
    const cost: Record<string, number> = {};
    for (const [k, v] of Object.entries(g.cost)) cost[k] = Number(v);
    this.cost = Object.freeze(cost);
    this.permitId = g.permitId;
    this.leaseExpiresAt = g.leaseExpiresAt;
    this.waitedMs = g.waitedMs;
    this.remaining = g.remaining;
  }

  /** Whether the permit was reported or released. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Report the upstream's answer: `response` is a fetch `Response`, an undici or `node:http`
   * response, an axios response or `{status, headers}`; `options` override or add to it.
   * Releases the concurrency slot, reconciles the cost, and returns permitd's advice. A
   * second report (or a report after a release) throws.
   */
  async report(response?: ResponseLike, options?: ReportOptions): Promise<Outcome> {
    const rep = reportArgs(response, options);
    if (this.#done) throw new Error(`permit ${this.permitId} was already reported or released`);
    this.#done = true;
    this.outcome = await this.#host.reportPermit(this.permitId, rep);
    return this.outcome;
  }

  /**
   * Give the permit back without an outcome; `refund: true` when the call was never made (its
   * cost goes back to the bucket). An already settled permit is fine.
   */
  async release(options?: { readonly refund?: boolean }): Promise<void> {
    const opts = checkOptions(options, "release options", ["refund"]);
    const refund = opts.refund === undefined ? false : checkBool(opts.refund, "refund");
    if (this.#done) return;
    this.#done = true;
    await this.#host.releasePermit(this.permitId, refund);
  }

  /**
   * Settle after `withPermit`'s function: nothing when it reported; else the response an
   * error carries is reported, or the permit released (refunded when the function threw).
   * A failure to settle is logged, never thrown: the lease reclaims the slot anyway, and the
   * function's own result or error must not be masked.
   */
  async settle(failed: boolean, error?: unknown): Promise<void> {
    if (this.#done) return;
    try {
      const resp = failed ? responseOfError(error) : undefined;
      if (resp !== undefined) await this.report(resp);
      else await this.release({ refund: failed });
    } catch (e) {
      this.#done = true;
      this.#host.warn(`could not settle permit ${this.permitId}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  toString(): string {
    return `Permit(${JSON.stringify(this.resource)}, id=${JSON.stringify(this.permitId)}, done=${this.#done})`;
  }
}
