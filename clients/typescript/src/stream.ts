/**
 * A server stream as an async iterator: `for await (const u of client.watch(prefix))`.
 * Breaking out of the loop, `close()`, or the caller's `signal` cancels the RPC and ends the
 * iteration quietly; any other failure throws the client's error class.
 */

import { Code, ConnectError } from "@connectrpc/connect";

import { mapRpcError } from "./errors.js";

export class ServerStream<T> implements AsyncIterableIterator<T> {
  readonly #ac = new AbortController();
  readonly #gen: AsyncGenerator<T, undefined, undefined>;

  /**
   * `open` starts the RPC with the stream's abort signal; `convert` maps each message; `what`
   * names the call in errors.
   */
  constructor(
    open: (signal: AbortSignal) => Promise<AsyncIterable<unknown>>,
    convert: (m: never) => T,
    what: string,
    signal?: AbortSignal,
  ) {
    const ac = this.#ac;
    const onAbort = (): void => ac.abort();
    if (signal?.aborted) ac.abort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    const conv = convert as (m: unknown) => T;
    this.#gen = (async function* run(): AsyncGenerator<T, undefined, undefined> {
      try {
        if (ac.signal.aborted) return undefined;
        for await (const m of await open(ac.signal)) yield conv(m);
      } catch (e) {
        if (ac.signal.aborted || ConnectError.from(e).code === Code.Canceled) return undefined;
        throw mapRpcError(e, what);
      } finally {
        signal?.removeEventListener("abort", onAbort);
        ac.abort();
      }
      return undefined;
    })();
  }

  next(): Promise<IteratorResult<T, undefined>> {
    return this.#gen.next();
  }

  /** What `break` calls: cancels the RPC and ends the iteration. */
  return(): Promise<IteratorResult<T, undefined>> {
    this.#ac.abort();
    return this.#gen.return(undefined);
  }

  /** Cancel the RPC: a pending or later `next()` ends the iteration. */
  close(): void {
    this.#ac.abort();
  }

  /** Whether the stream was closed (by `close()`, `break`, the signal, or its end). */
  get closed(): boolean {
    return this.#ac.signal.aborted;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
