/**
 * Idempotency keys over the real Idempotency service, over gRPC and Connect: a side effect
 * happens once however often it is retried; a key reused for another request is refused.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { Client, IdempotencyConflict, IdempotencyInProgress, type Idempotent } from "../src/index.js";
import { clientFor, deferred, startServer, TRANSPORTS, Upstream, within, type Server } from "./helpers.js";

const T = { timeout: 30_000 };
const key = (): string => `ts-test-${randomUUID()}`;

describe("idempotent", () => {
  let server: Server;
  let upstream: Upstream;

  before(async () => {
    server = await startServer();
    upstream = await Upstream.start();
  });
  after(async () => {
    await upstream?.stop();
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

      const postOnce = (k: string, url: string, payload: object): Promise<Idempotent> =>
        client.idempotent(k, { fingerprint: payload }, async (op) => {
          if (!op.replayed) await op.complete(await fetch(url, { method: "POST", body: JSON.stringify(payload) }));
          return op;
        });

      it("replays the stored result: the side effect happens once", T, async () => {
        const path = upstream.path();
        const url = upstream.script(path, { status: 201, headers: { Location: "/charges/1" }, body: { charge: 1 } });
        const k = key();
        const payload = { amount: 42, currency: "EUR" };
        const first = await postOnce(k, url, payload);
        const second = await postOnce(k, url, payload);
        assert.equal(first.replayed, false);
        assert.equal(second.replayed, true);
        assert.equal(upstream.hitsOf(path).length, 1);
        const r = second.result;
        assert.ok(r);
        assert.equal(r.status, 201);
        assert.deepEqual(r.json(), { charge: 1 }); // the body was read from a clone of the fetch Response
        assert.equal(r.headers["location"], "/charges/1");
        assert.deepEqual(first.result?.json(), r.json());
        const replayed = r.toResponse();
        assert.equal(replayed.status, 201);
        assert.deepEqual(await replayed.json(), { charge: 1 });
      });

      it("a key reused with another fingerprint is an IdempotencyConflict", T, async () => {
        const k = key();
        await postOnce(k, upstream.url(upstream.path()), { amount: 1 });
        let ran = false;
        const e = await client
          .idempotent(k, { fingerprint: { amount: 2 } }, () => {
            ran = true;
          })
          .catch((err: unknown) => err);
        assert.ok(e instanceof IdempotencyConflict, String(e));
        assert.equal(e.key, k);
        assert.equal(ran, false);
      });

      it("an error abandons the key so a retry runs; returning without complete still counts as done", T, async () => {
        const k = key();
        await assert.rejects(
          client.idempotent(k, { fingerprint: "fp" }, () => {
            throw new Error("upstream reset");
          }),
          /upstream reset/,
        );
        const second = await client.idempotent(k, { fingerprint: "fp", waitMs: 0 }, async (op) => {
          assert.equal(op.replayed, false);
          await op.complete(undefined, { status: 200, body: "done", metadata: { attempt: "2" } });
          return op;
        });
        assert.equal(second.completed, true);
        const third = await client.idempotent(k, { fingerprint: "fp" }, (op) => op);
        assert.equal(third.replayed, true);
        assert.equal(third.result?.text(), "done");
        assert.deepEqual({ ...third.result?.metadata }, { attempt: "2" });

        const k2 = key();
        await client.idempotent(k2, () => undefined);
        const again = await client.idempotent(k2, (op) => op);
        assert.equal(again.replayed, true);
        assert.equal(again.result?.status, 0);
      });

      it("waits while another worker holds the key, then gives up or replays", T, async () => {
        const k = key();
        const holding = deferred();
        const release = deferred();
        const other = clientFor(server, kind);
        const holder = other.idempotent(k, { fingerprint: "fp" }, async (op) => {
          holding.resolve();
          await release.promise;
          await op.complete(undefined, { status: 200, body: new TextEncoder().encode("from the holder") });
        });
        await within(holding.promise, 10_000, "the holder to claim the key");
        let ran = false;
        const e = await client
          .idempotent(k, { fingerprint: "fp", waitMs: 200 }, () => {
            ran = true;
          })
          .catch((err: unknown) => err);
        assert.ok(e instanceof IdempotencyInProgress, String(e));
        assert.ok(e.retryAfterMs > 0);
        assert.equal(ran, false);
        release.resolve();
        await holder;
        const op = await client.idempotent(k, { fingerprint: "fp", waitMs: 10_000 }, (o) => o);
        assert.equal(op.replayed, true);
        assert.equal(op.result?.text(), "from the holder");
        await other.close();
      });
    });
  }
});
