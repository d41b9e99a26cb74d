/**
 * Permits against the real server, over gRPC and Connect: withPermit settles, reports teach
 * permitd an upstream's limits and pause everyone after a 429, refunds give the cost back.
 */

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";

import { Client, InvalidArgument, NotFound, Permit, PermitDenied, type QuotaUpdate } from "../src/index.js";
import { clientFor, makeResource, startServer, TRANSPORTS, Upstream, type Server } from "./helpers.js";

const RL_HEADERS = { "X-RateLimit-Limit": "7", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "30" };
const T = { timeout: 30_000 };

describe("permits", () => {
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

      it("learns an OpenAI-style limit from the upstream's headers and pauses everyone after its 429", T, async () => {
        // permitd's guess is 100/min; the upstream really allows 5 per minute and says so.
        const res = await makeResource(client, `learn-${kind}`, {
          limits: [{ dimension: "requests", amount: 100, periodMs: 60_000 }],
          limitsKnown: false,
        });
        const path = upstream.path();
        const url = upstream.limited(path, 5, 60_000, 5);

        const first = await client.withPermit(res, { maxWaitMs: 5_000 }, async (p) => {
          const r = await fetch(url);
          const outcome = await p.report(r);
          assert.equal(r.status, 200);
          return outcome;
        });
        assert.equal(first.status, 200);
        assert.equal(first.retry, false);
        const learned = first.learned.find((l) => l.dimension === "requests");
        assert.ok(learned, `learned nothing: ${JSON.stringify(first.learned)}`);
        assert.equal(learned.limit, 5);
        assert.equal(learned.remaining, 4);
        assert.match(learned.source, /x-ratelimit-.*-requests/);

        const q = await client.getQuota(res);
        const dim = q.dimensions.find((d) => d.dimension === "requests");
        assert.ok(dim);
        assert.equal(dim.limit, 5);
        assert.equal(dim.source, "LEARNED");
        assert.ok(dim.remaining <= 4, `remaining ${dim.remaining}`);
        assert.equal(q.inFlight, 0);

        // Another client of the same upstream key, outside permitd, uses up the rest.
        for (let i = 0; i < 4; i++) assert.equal((await fetch(url)).status, 200);

        const second = await client.withPermit(res, { maxWaitMs: 20_000 }, async (p) => {
          const r = await fetch(url);
          assert.equal(r.status, 429);
          return p.report(r);
        });
        assert.equal(second.retry, true);
        // Never before the upstream's Retry-After (5 s); later when the learned pace says so.
        assert.ok(second.retryAfterMs >= 4_500 && second.retryAfterMs <= 60_000, `retryAfterMs ${second.retryAfterMs}`);
        assert.ok(second.cooldownUntil instanceof Date && second.cooldownUntil.getTime() > Date.now());

        // Paused for every worker: a permit is denied until the cooldown ends.
        const denied = await client.acquire(res).then(
          () => assert.fail("granted during the cooldown"),
          (e: unknown) => e,
        );
        assert.ok(denied instanceof PermitDenied, String(denied));
        assert.equal(denied.reason, "COOLDOWN");
        assert.ok(denied.retryAfterMs >= 4_000 && denied.retryAfterMs <= 60_000, `retryAfterMs ${denied.retryAfterMs}`);
        const paused = await client.getQuota(res);
        assert.equal(paused.upstream429Total, 1);
        assert.ok(paused.cooldownUntil instanceof Date);
        assert.ok(paused.cooldownReason.length > 0);
        assert.equal(upstream.hitsOf(path).length, 6);
      });

      it("withPermit grants, keeps the cost of a call that was made, and releases the slot", T, async () => {
        const res = await makeResource(client, `grant-${kind}`, {
          limits: [
            { dimension: "requests", amount: 10, periodMs: 60_000 },
            { dimension: "tokens", amount: 5000, periodMs: 60_000 },
          ],
          concurrency: 2,
        });
        let held: Permit | undefined;
        const out = await client.withPermit(res, { cost: { tokens: 1200 }, maxWaitMs: 5_000 }, async (p) => {
          held = p;
          assert.ok(p instanceof Permit);
          assert.ok(p.permitId);
          assert.deepEqual({ ...p.remaining }, { requests: 9, tokens: 3800 });
          assert.ok(p.leaseExpiresAt instanceof Date);
          assert.equal((await client.getQuota(res)).inFlight, 1);
          return "done";
        });
        assert.equal(out, "done");
        assert.ok(held?.done);
        const q = await client.getQuota(res);
        assert.equal(q.inFlight, 0);
        // Returned without reporting: released, no refund (3800, plus what refilled meanwhile
        // at 5000 a minute).
        const tokens = q.remaining["tokens"] ?? 0;
        assert.ok(tokens >= 3800 && tokens < 3900, `tokens ${tokens}`);
        assert.equal(q.grantedTotal, 1);
      });

      it("refunds the permit when the function throws before reporting", T, async () => {
        const res = await makeResource(client, `refund-${kind}`, {
          limits: [
            { dimension: "requests", amount: 2, periodMs: 60_000 },
            { dimension: "tokens", amount: 1000, periodMs: 60_000 },
          ],
          concurrency: 1,
        });
        let held: Permit | undefined;
        let during: QuotaUpdate | undefined;
        await assert.rejects(
          client.withPermit(res, { cost: { tokens: 600 } }, async (p) => {
            held = p;
            during = await client.getQuota(res);
            throw new RangeError("the call was never made");
          }),
          RangeError,
        );
        assert.deepEqual({ ...during?.remaining }, { requests: 1, tokens: 400 });
        assert.ok(held?.done);
        assert.equal(held?.outcome, undefined);
        const q = await client.getQuota(res);
        assert.equal(q.inFlight, 0);
        assert.deepEqual({ ...q.remaining }, { requests: 2, tokens: 1000 }); // back up: refunded
      });

      it("reports the HTTP response an error carries instead of refunding", T, async () => {
        const res = await makeResource(client, `carried-${kind}`);
        const url = upstream.script(upstream.path(), { status: 429, headers: { "Retry-After": "2" } });
        class HttpError extends Error {
          constructor(readonly response: Response) {
            super(`HTTP ${response.status}`);
          }
        }
        await assert.rejects(
          client.withPermit(res, async () => {
            const r = await fetch(url);
            if (!r.ok) throw new HttpError(r); // what ky and axios throw
            return r;
          }),
          HttpError,
        );
        const q = await client.getQuota(res);
        assert.equal(q.upstream429Total, 1);
        assert.ok(q.cooldownUntil instanceof Date);
        assert.equal(q.inFlight, 0);
      });

      it("denies with a reason and a retryAfterMs", T, async () => {
        const res = await makeResource(client, `deny-${kind}`, { limits: [{ dimension: "requests", amount: 1, periodMs: 60_000 }] });
        await client.withPermit(res, () => undefined);
        let ran = false;
        const e = await client
          .withPermit(res, () => {
            ran = true;
          })
          .catch((err: unknown) => err);
        assert.equal(ran, false);
        assert.ok(e instanceof PermitDenied);
        assert.equal(e.reason, "RATE_LIMITED");
        assert.equal(e.code, undefined);
        assert.equal(e.resource, res);
        assert.ok(e.retryAfterMs > 50_000 && e.retryAfterMs <= 60_000, `retryAfterMs ${e.retryAfterMs}`);
      });

      it("acquire by hand: concurrency denial, release, queueing", T, async () => {
        const res = await makeResource(client, `hand-${kind}`, { concurrency: 1 });
        const p = await client.acquire(res);
        const e = await client.acquire(res).catch((err: unknown) => err);
        assert.ok(e instanceof PermitDenied && e.reason === "CONCURRENCY_LIMITED", String(e));
        await p.release();
        assert.ok(p.done);
        await p.release(); // settled already: fine
        await assert.rejects(p.report({ status: 200 }), /already reported or released/);
        const q = await client.acquire(res, { maxWaitMs: 2_000 });
        await q.release({ refund: true });

        const slow = await makeResource(client, `queue-${kind}`, { limits: [{ dimension: "requests", amount: 1, periodMs: 400 }] });
        await (await client.acquire(slow)).release();
        const t0 = performance.now();
        const waited = await client.acquire(slow, { maxWaitMs: 5_000 });
        assert.ok(waited.waitedMs > 200, `waited ${waited.waitedMs}`);
        assert.ok(performance.now() - t0 > 200);
        await waited.release();
        const timeout = await client.acquire(slow, { maxWaitMs: 50 }).catch((err: unknown) => err);
        assert.ok(timeout instanceof PermitDenied && timeout.reason === "QUEUE_TIMEOUT", String(timeout));
      });

      it("report reads fetch, node:http, undici- and axios-shaped responses and explicit fields", T, async () => {
        // A fresh resource per shape: each report teaches it the same fixed window anew.
        const fresh = (): Promise<string> =>
          makeResource(client, `shapes-${kind}`, {
            limits: [
              { dimension: "requests", amount: 50, periodMs: 60_000 },
              { dimension: "tokens", amount: 10_000, periodMs: 60_000 },
            ],
          });
        const url = upstream.script(upstream.path(), { status: 200, headers: RL_HEADERS });
        const learnedSeven = (o: { learned: readonly { dimension: string; limit: number }[] }): boolean =>
          o.learned.some((l) => l.dimension === "requests" && l.limit === 7);

        // fetch Response (Headers).
        let p = await client.acquire(await fresh());
        let out = await p.report(await fetch(url));
        assert.ok(learnedSeven(out), JSON.stringify(out.learned));
        assert.equal(out.status, 200);

        // node:http IncomingMessage: statusCode + a headers object.
        const msg = await new Promise<http.IncomingMessage>((resolve, reject) => {
          http.get(url, (r) => {
            r.resume();
            r.on("end", () => resolve(r));
          }).on("error", reject);
        });
        p = await client.acquire(await fresh());
        assert.ok(learnedSeven(await p.report(msg)));

        // undici's request(): statusCode + a plain headers object (arrays for repeats).
        p = await client.acquire(await fresh());
        assert.ok(learnedSeven(await p.report({ statusCode: 200, headers: { "x-ratelimit-limit": "7", "x-ratelimit-remaining": "3", "x-ratelimit-reset": "30", "set-cookie": ["a=1", "b=2"] } })));

        // axios: status + AxiosHeaders (toJSON()).
        class AxiosHeadersLike {
          [k: string]: unknown;
          constructor(h: Record<string, string>) {
            Object.assign(this, h);
          }
          toJSON(): Record<string, string> {
            return { ...(this as Record<string, string>) };
          }
        }
        p = await client.acquire(await fresh());
        assert.ok(learnedSeven(await p.report({ status: 200, headers: new AxiosHeadersLike(RL_HEADERS) })));

        // {status, headers} with pairs, and an actual cost to reconcile.
        const res = await fresh();
        p = await client.acquire(res, { cost: { tokens: 4000 } });
        out = await p.report(undefined, { status: 200, headers: [["x-ratelimit-limit-tokens", "9000"]], actualCost: { tokens: 1500 } });
        assert.equal(out.retry, false);
        const q = await client.getQuota(res);
        assert.ok((q.remaining["tokens"] ?? 0) >= 8500, JSON.stringify(q.remaining)); // 4000 taken, 2500 refunded
        await assert.rejects(p.report({ status: 200 }), Error);
      });

      it("partitions are separate buckets", T, async () => {
        const res = await makeResource(client, `part-${kind}`, {
          limits: [{ dimension: "requests", amount: 1, periodMs: 60_000 }],
          perPartition: true,
        });
        await (await client.acquire(res, { partition: "user:1" })).release();
        await (await client.acquire(res, { partition: "user:2" })).release();
        await assert.rejects(client.acquire(res, { partition: "user:1" }), PermitDenied);
        const s = await client.getSummary(res);
        assert.equal(s.perPartition, true);
        assert.equal(s.livePartitions, 2);
        const names: string[] = [];
        for await (const u of client.partitions(res, { pageSize: 1 })) names.push(u.partition);
        assert.deepEqual(names, ["user:1", "user:2"]);
      });

      it("NotFound for an unknown resource, InvalidArgument for a cost the server refuses", T, async () => {
        const nf = await client.acquire("ts:no-such-resource").catch((e: unknown) => e);
        assert.ok(nf instanceof NotFound, String(nf));
        assert.equal(nf.code, "NOT_FOUND");
        const res = await makeResource(client, `invalid-${kind}`, { limits: [{ dimension: "requests", amount: 1, periodMs: 60_000 }] });
        // A cost above the burst can never be granted: the server refuses it, naming the field.
        const ia = await client.acquire(res, { cost: { requests: 5 } }).catch((e: unknown) => e);
        assert.ok(ia instanceof InvalidArgument, String(ia));
        assert.equal(ia.code, "INVALID_ARGUMENT");
        assert.match(ia.message, /cost/);
        await assert.rejects(client.getQuota("ts:no-such-resource"), NotFound);
        await assert.rejects(client.deleteResource("ts:no-such-resource"), NotFound);
      });

      it("putResource stores the definition; computeBackoff and resetResource answer", T, async () => {
        const name = await makeResource(client, `admin-${kind}`, {
          limits: [{ dimension: "requests", amount: 5, periodMs: 1_000, scope: "resource" }],
          backoff: { kind: "exponential", baseMs: 100, maxMs: 400, maxAttempts: 3 },
          failurePolicy: "local_fallback",
          leaseMs: 1_500,
          dimensions: ["tokens"],
        });
        const stored = await client.putResource(name, {
          limits: [{ dimension: "requests", amount: 5, periodMs: 1_000, scope: "resource" }],
          backoff: { kind: "exponential", baseMs: 100, maxMs: 400, maxAttempts: 3 },
          failurePolicy: "local_fallback",
          leaseMs: 1_500,
          dimensions: ["tokens"],
          limitsKnown: true,
        });
        assert.equal(stored.name, name);
        const lim = stored.limits[0];
        assert.equal(stored.limits.length, 1);
        assert.equal(lim?.dimension, "requests");
        assert.equal(lim?.amount, 5);
        assert.equal(lim?.periodMs, 1_000);
        assert.equal(lim?.scope, "resource");
        assert.equal(stored.failurePolicy, "local_fallback");
        assert.equal(stored.leaseMs, 1_500);
        assert.equal(stored.backoff?.kind, "exponential");
        assert.deepEqual([...stored.dimensions], ["tokens"]);

        const advice = await client.computeBackoff(name, { attempt: 1, status: 503 });
        assert.equal(advice.retry, true);
        assert.ok(advice.retryAfterMs > 0 && advice.retryAfterMs <= 400, `retryAfterMs ${advice.retryAfterMs}`);
        const withHeader = await client.computeBackoff(name, { attempt: 1, status: 429, headers: { "retry-after": "2" } });
        assert.ok(withHeader.retryAfterMs >= 1_900, `retryAfterMs ${withHeader.retryAfterMs}`);
        const last = await client.computeBackoff(name, { attempt: 3, status: 503 });
        assert.equal(last.giveUp, true);

        const p = await client.acquire(name);
        await p.report({ status: 429, headers: { "Retry-After": "31000000" } });
        const q = await client.getQuota(name);
        assert.ok(q.cooldownUntil instanceof Date);
        assert.match(q.cooldownReason, /max_retry_after/);
        assert.equal(await client.resetResource(name), 1);
        assert.equal((await client.getQuota(name)).cooldownUntil, undefined);
        await client.deleteResource(name);
        await assert.rejects(client.getQuota(name), NotFound);
      });
    });
  }
});
