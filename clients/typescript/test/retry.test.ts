/**
 * call(): permitd's advice (the upstream's Retry-After, the resource's backoff policy, its
 * attempts) drives every retry, over gRPC and Connect, against a real HTTP upstream.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client, RetriesExhausted, type Backoff } from "../src/index.js";
import { clientFor, freePort, makeResource, startServer, TRANSPORTS, Upstream, type Server } from "./helpers.js";

const FAST: Backoff = { kind: "exponential", baseMs: 50, maxMs: 200, maxAttempts: 3 };
const T = { timeout: 30_000 };

describe("call", () => {
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

      it("retries a 429 after the upstream's Retry-After, then returns the success", T, async () => {
        const res = await makeResource(client, `ra-${kind}`, { backoff: FAST });
        const path = upstream.path();
        const url = upstream.script(path, { status: 429, headers: { "Retry-After": "1" } }, { status: 200, body: { ok: true } });
        const attempts: number[] = [];
        const r = await client.call(res, async ({ attempt }) => {
          attempts.push(attempt);
          return fetch(url);
        });
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { ok: true });
        assert.deepEqual(attempts, [1, 2]);
        const hits = upstream.hitsOf(path);
        assert.equal(hits.length, 2);
        // The policy alone would wait 50 ms: the upstream's Retry-After (1 s) won.
        assert.ok((hits[1]?.at ?? 0) - (hits[0]?.at ?? 0) >= 950);
      });

      it("retries a 503 as the policy advises and gives up with RetriesExhausted", T, async () => {
        const res = await makeResource(client, `giveup-${kind}`, { backoff: FAST });
        const path = upstream.path();
        const url = upstream.script(path, { status: 503, body: { error: "down" } });
        const e = await client.call(res, () => fetch(url)).catch((err: unknown) => err);
        assert.ok(e instanceof RetriesExhausted, String(e));
        assert.equal(e.attempts, 3);
        assert.equal(e.status, 503);
        assert.ok(e.lastResponse instanceof Response);
        assert.equal((e.lastResponse as Response).status, 503);
        assert.equal(e.lastError, undefined);
        assert.equal(upstream.hitsOf(path).length, 3);
      });

      it("maxAttempts caps the policy", T, async () => {
        const res = await makeResource(client, `cap-${kind}`, { backoff: FAST });
        const path = upstream.path();
        const url = upstream.script(path, { status: 502, body: "bad gateway" });
        const e = await client.call(res, () => fetch(url), { maxAttempts: 2 }).catch((err: unknown) => err);
        assert.ok(e instanceof RetriesExhausted);
        assert.equal(e.attempts, 2);
        assert.equal(upstream.hitsOf(path).length, 2);
      });

      it("returns an answer permitd does not advise retrying (404) at once", T, async () => {
        const res = await makeResource(client, `404-${kind}`, { backoff: FAST });
        const path = upstream.path();
        const url = upstream.script(path, { status: 404, body: { error: "no such thing" } });
        const r = await client.call(res, () => fetch(url));
        assert.equal(r.status, 404);
        assert.equal(upstream.hitsOf(path).length, 1);
      });

      it("retries network errors as no answer (status 0)", T, async () => {
        const res = await makeResource(client, `net-${kind}`, { backoff: FAST });
        const dead = `http://127.0.0.1:${await freePort()}/`;
        const e = await client.call(res, () => fetch(dead)).catch((err: unknown) => err);
        assert.ok(e instanceof RetriesExhausted, String(e));
        assert.equal(e.attempts, 3);
        assert.equal(e.status, 0);
        assert.equal(e.lastResponse, undefined);
        assert.ok(e.lastError instanceof TypeError); // fetch failed
        assert.equal(e.cause, e.lastError);
      });

      it("reports the response an HTTP error carries (axios-style) and retries it", T, async () => {
        const res = await makeResource(client, `axios-${kind}`, { backoff: FAST });
        const path = upstream.path();
        const url = upstream.script(path, { status: 503, headers: { "Retry-After": "0" } }, { status: 200 });
        const r = await client.call(res, async () => {
          const got = await fetch(url);
          if (!got.ok) {
            // axios rejects non-2xx with error.response = {status, headers, data}.
            throw Object.assign(new Error(`Request failed with status code ${got.status}`), {
              response: { status: got.status, headers: Object.fromEntries(got.headers), data: await got.text() },
            });
          }
          return got;
        });
        assert.equal(r.status, 200);
        assert.equal(upstream.hitsOf(path).length, 2);
      });

      it("other errors refund the permit and propagate", T, async () => {
        const res = await makeResource(client, `bug-${kind}`, { limits: [{ dimension: "requests", amount: 5, periodMs: 60_000 }] });
        await assert.rejects(
          client.call(res, () => {
            throw new SyntaxError("a bug, not a network error");
          }),
          SyntaxError,
        );
        assert.equal((await client.getQuota(res)).remaining["requests"], 5);
      });

      it("reconciles the actual cost read from the response", T, async () => {
        const res = await makeResource(client, `cost-${kind}`, {
          limits: [
            { dimension: "requests", amount: 10, periodMs: 60_000 },
            { dimension: "tokens", amount: 10_000, periodMs: 3_600_000 },
          ],
        });
        const url = upstream.script(upstream.path(), { status: 200, body: { usage: { total_tokens: 321 } } });
        let used = 0;
        const r = await client.call(
          res,
          async () => {
            const got = await fetch(url);
            used = ((await got.clone().json()) as { usage: { total_tokens: number } }).usage.total_tokens;
            return got;
          },
          { cost: { tokens: 2000 }, actualCost: () => ({ tokens: used }) },
        );
        assert.equal(r.status, 200);
        // 2000 acquired, 321 used: the difference is refunded (plus what refilled meanwhile,
        // about 3 tokens a second at 10 000 an hour).
        const left = (await client.getQuota(res)).remaining["tokens"] ?? 0;
        assert.ok(left >= 10_000 - 321 && left <= 10_000 - 321 + 30, `left ${left}`);
      });
    });
  }
});
