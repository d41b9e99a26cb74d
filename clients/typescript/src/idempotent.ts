/**
 * An idempotency key held for one attempt: `client.idempotent(key, opts, async (op) => ...)`
 * claims the key, runs the function, and completes or abandons the key after it. The RPCs
 * are the client's (`IdempotencyHost`).
 */

import { create } from "@bufbuild/protobuf";

import { checkOptions, checkStatus, isPlainObject } from "./checks.js";
import { storedOf } from "./convert.js";
import * as idem from "./gen/permitd/v1/idempotency_pb.js";
import { bodyOf, bytesOf, normalizeHeaders, responseHeaders, responseStatus, type HeadersLike, type ResponseLike } from "./http.js";
import type { StoredResult } from "./types.js";

/** What `op.complete()` takes besides the response (each overrides the response's). */
export interface CompleteOptions {
  readonly status?: number | undefined;
  readonly headers?: HeadersLike | undefined;
  /** The body (a string or bytes); default: read from the response when it can be. */
  readonly body?: string | Uint8Array | ArrayBuffer | undefined;
  /** Free-form metadata of yours. */
  readonly metadata?: Readonly<Record<string, string>> | undefined;
}

/** What an idempotency handle needs of the client. */
export interface IdempotencyHost {
  complete(req: idem.CompleteRequest): Promise<void>;
  abandon(req: idem.AbandonRequest): Promise<void>;
}

/**
 * The handle `idempotent()` passes to your function.
 *
 * - `replayed` true: the call was already made; `result` is its stored result. Don't call
 *   again.
 * - else you own the key: make the call and `await op.complete(response)` (or
 *   `complete(undefined, {status, headers, body, metadata})`). A function that returns
 *   without completing completes the key with an empty result (the side effect happened);
 *   one that throws abandons the key so a later attempt may run.
 */
export class Idempotent {
  readonly key: string;
  readonly fingerprint: string;
  replayed = false;
  result: StoredResult | undefined = undefined;
  completed = false;
  /** @internal */
  lockToken = "";
  readonly #host: IdempotencyHost;

  constructor(host: IdempotencyHost, key: string, fingerprint: string) {
    this.#host = host;
    this.key = key;
    this.fingerprint = fingerprint;
  }

  /** Store the call's result (durably) so later attempts replay it. */
  async complete(response?: ResponseLike, options?: CompleteOptions): Promise<StoredResult> {
    const opts = checkOptions(options, "complete options", ["status", "headers", "body", "metadata"]);
    const status =
      opts.status !== undefined ? checkStatus(opts.status) : response !== undefined ? responseStatus(response) : 0;
    const headers = response !== undefined ? responseHeaders(response) : {};
    if (opts.headers !== undefined) Object.assign(headers, normalizeHeaders(opts.headers));
    let body: Uint8Array;
    if (opts.body !== undefined) {
      const b = bytesOf(opts.body);
      if (b === undefined) throw new TypeError("body must be a string, a Uint8Array or an ArrayBuffer");
      body = b;
    } else {
      body = response !== undefined ? await bodyOf(response) : new Uint8Array();
    }
    const metadata: Record<string, string> = {};
    if (opts.metadata !== undefined) {
      if (!isPlainObject(opts.metadata)) throw new TypeError("metadata must be an object of strings");
      for (const [k, v] of Object.entries(opts.metadata)) {
        if (typeof v !== "string") throw new TypeError("metadata must be an object of strings");
        metadata[k] = v;
      }
    }
    this.#checkNotCompleted();
    const result = create(idem.StoredResultSchema, { statusCode: status, headers, body, metadata });
    await this.#host.complete(create(idem.CompleteRequestSchema, { key: this.key, result, lockToken: this.lockToken }));
    this.completed = true;
    this.result = storedOf(result);
    return this.result;
  }

  /** Drop the lock so another attempt may begin. */
  async abandon(): Promise<void> {
    this.#checkNotCompleted();
    await this.#host.abandon(create(idem.AbandonRequestSchema, { key: this.key, lockToken: this.lockToken }));
    this.completed = true;
  }

  #checkNotCompleted(): void {
    if (this.completed) throw new Error(`idempotency key ${JSON.stringify(this.key)} is already completed`);
  }

  toString(): string {
    return `Idempotent(${JSON.stringify(this.key)}, replayed=${this.replayed}, completed=${this.completed})`;
  }
}
