/**
 * Watch as an async iterator, over gRPC and Connect: the snapshot, then a change after an
 * acquire; breaking out of the loop, close() and an AbortSignal end the stream.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client, PermitdUnavailable, type QuotaUpdate } from "../src/index.js";
import { clientFor, freePort, makeResource, startServer, TRANSPORTS, within, type Server } from "./helpers.js";

const T = { timeout: 30_000 };
/** Bounds every loop over a stream: no test can hang on a stream that stays silent. */
const BOUND_MS = 20_000;

describe("watch", () => {
  let server: Server;

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  for (const kind of TRANSPORTS) {
    describe(`over ${kind}`, () => {
      let client: Client;
      before(() => {
        client = clientFor(server, kind);
      });
      after(async () => {
        await client?.close();
      });

      it("yields the snapshot, then the change an acquire makes; break ends the stream", T, async () => {
        const res = await makeResource(client, `watch-${kind}`, { limits: [{ dimension: "requests", amount: 10, periodMs: 60_000 }] });
        const w = client.watch(res, { minIntervalMs: 10, signal: AbortSignal.timeout(BOUND_MS) });
        const first = await w.next();
        assert.equal(first.done, false);
        const snap = first.value as QuotaUpdate;
        assert.equal(snap.resource, res);
        assert.equal(snap.grantedTotal, 0);
        assert.deepEqual({ ...snap.remaining }, { requests: 10 });

        await (await client.acquire(res)).report({ status: 200 });
        let seen: QuotaUpdate | undefined;
        let n = 0;
        for await (const u of w) {
          assert.equal(u.resource, res);
          if (u.grantedTotal === 1 && u.inFlight === 0) {
            seen = u;
            break; // ends the stream
          }
          assert.ok(++n < 100, "too many updates without the change");
        }
        assert.ok(seen, "the stream ended without the change");
        assert.equal(seen.remaining["requests"], 9);
        assert.equal(w.closed, true);
        assert.deepEqual(await w.next(), { done: true, value: undefined });
      });

      it("only matching resources; close() and the signal end a pending read", T, async () => {
        const a = await makeResource(client, `wa-${kind}`);
        const b = await makeResource(client, `wb-${kind}`);
        const w = client.watch(a, { signal: AbortSignal.timeout(BOUND_MS) });
        await (await client.acquire(b)).release();
        await (await client.acquire(a)).release();
        const names = new Set<string>();
        for await (const u of w) {
          names.add(u.resource);
          if (u.grantedTotal >= 1) break;
        }
        assert.deepEqual([...names], [a]);

        // close() while a read waits: the read ends the iteration.
        const w2 = client.watch(a, { signal: AbortSignal.timeout(BOUND_MS) });
        assert.equal((await w2.next()).done, false); // the snapshot
        const pending = w2.next(); // nothing changes: it waits
        w2.close();
        assert.deepEqual(await within(pending, 5_000, "close() to end the read"), { done: true, value: undefined });

        // The caller's signal does the same.
        const ac = new AbortController();
        const w3 = client.watch(a, { signal: ac.signal });
        assert.equal((await w3.next()).done, false);
        const pending3 = w3.next();
        ac.abort();
        assert.deepEqual(await within(pending3, 5_000, "the signal to end the read"), { done: true, value: undefined });
      });

      it("watchSummaries yields a summary per resource", T, async () => {
        const res = await makeResource(client, `ws-${kind}`, { perPartition: true });
        await (await client.acquire(res, { partition: "user:1" })).release();
        for await (const s of client.watchSummaries(res, { signal: AbortSignal.timeout(BOUND_MS) })) {
          assert.equal(s.resource, res);
          assert.equal(s.perPartition, true);
          break;
        }
      });

      it("a stream to a closed port throws PermitdUnavailable", T, async () => {
        const dead = new Client({
          target: `127.0.0.1:${await freePort()}`,
          transport: kind,
          ...(kind === "connect" ? { httpVersion: "1.1" as const } : {}),
        });
        const e = await (async () => {
          for await (const _ of dead.watch("", { signal: AbortSignal.timeout(BOUND_MS) })) {
            /* nothing arrives */
          }
        })().catch((err: unknown) => err);
        assert.ok(e instanceof PermitdUnavailable, String(e));
        assert.equal(e.code, "UNAVAILABLE");
        await dead.close();
      });
    });
  }
});
