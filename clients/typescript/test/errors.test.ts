/**
 * Typed errors: bad arguments throw TypeError/RangeError before any call; a closed port is
 * PermitdUnavailable; a server in `[auth] mode = "tokens"` answers UNAUTHENTICATED without a
 * token and PERMISSION_DENIED beyond a token's role, over gRPC and Connect.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Client, PermissionDenied, PermitdError, PermitdUnavailable, Unauthenticated } from "../src/index.js";
import { clientFor, freePort, sha256Hex, startServer, TRANSPORTS, type Server } from "./helpers.js";

const T = { timeout: 30_000 };
const OK = "openai:gpt-4o";
const ADMIN = "pmt_ts_admin_0123456789abcdef0123456789";
const WORKER = "pmt_ts_worker_0123456789abcdef0123456789";
const VIEWER = "pmt_ts_viewer_0123456789abcdef0123456789";

function principal(name: string, role: string, token: string): string {
  return `[[auth.principals]]\nname = "${name}"\ntenant = "team-ts"\nrole = "${role}"\ntoken_sha256 = "${sha256Hex(token)}"\n\n`;
}

type Case = [string, (c: Client) => Promise<unknown> | unknown, ErrorConstructor | RangeErrorConstructor | TypeErrorConstructor];

// Each runs on a client pointed at a port where nothing listens: had a call been made, it
// would throw PermitdUnavailable instead.
const CASES: Case[] = [
  ["resource empty", (c) => c.acquire(""), RangeError],
  ["resource not a string", (c) => c.acquire(42 as never), TypeError],
  ["resource bad characters", (c) => c.acquire("open ai!"), RangeError],
  ["resource too long", (c) => c.acquire("a".repeat(201)), RangeError],
  ["partition bad", (c) => c.acquire(OK, { partition: "user 42" }), RangeError],
  ["cost not an object", (c) => c.acquire(OK, { cost: [["tokens", 1]] as never }), TypeError],
  ["cost negative", (c) => c.acquire(OK, { cost: { tokens: -1 } }), RangeError],
  ["cost fractional", (c) => c.acquire(OK, { cost: { tokens: 1.5 } }), RangeError],
  ["cost a string", (c) => c.acquire(OK, { cost: { tokens: "5" as never } }), TypeError],
  ["cost bigint too large", (c) => c.acquire(OK, { cost: { tokens: 1n << 64n } }), RangeError],
  ["cost dimension bad", (c) => c.acquire(OK, { cost: { "": 2 } }), RangeError],
  ["maxWaitMs negative", (c) => c.acquire(OK, { maxWaitMs: -1 }), RangeError],
  ["maxWaitMs a string", (c) => c.acquire(OK, { maxWaitMs: "5" as never }), TypeError],
  ["maxWaitMs NaN", (c) => c.acquire(OK, { maxWaitMs: NaN }), RangeError],
  ["maxWait in seconds (unknown option)", (c) => c.acquire(OK, { maxWait: 30 } as never), TypeError],
  ["priority a string", (c) => c.acquire(OK, { priority: "high" as never }), TypeError],
  ["priority out of range", (c) => c.acquire(OK, { priority: 2 ** 40 }), RangeError],
  ["leaseMs zero", (c) => c.acquire(OK, { leaseMs: 0 }), RangeError],
  ["withPermit fn missing", (c) => c.withPermit(OK, {} as never), TypeError],
  ["call fn not a function", (c) => c.call(OK, "nope" as never), TypeError],
  ["call maxAttempts zero", (c) => c.call(OK, () => ({ status: 200 }), { maxAttempts: 0 }), RangeError],
  ["call retryOn not a function", (c) => c.call(OK, () => ({ status: 200 }), { retryOn: 1 as never }), TypeError],
  ["idempotent key empty", (c) => c.idempotent("", () => 1), RangeError],
  ["idempotent key too long", (c) => c.idempotent("k".repeat(256), () => 1), RangeError],
  ["idempotent key control character", (c) => c.idempotent("a\nb", () => 1), RangeError],
  ["idempotent fingerprint unhashable", (c) => c.idempotent("k", { fingerprint: Symbol("x") }, () => 1), TypeError],
  ["idempotent ttlMs zero", (c) => c.idempotent("k", { ttlMs: 0 }, () => 1), RangeError],
  ["cacheGet namespace empty", (c) => c.cacheGet("", "k"), RangeError],
  ["cachePut value a number", (c) => c.cachePut("ns", "k", 5 as never), TypeError],
  ["watch partitionPrefix with resourceBucketsOnly", (c) => c.watch("", { partitionPrefix: "u", resourceBucketsOnly: true }), RangeError],
  ["watch minIntervalMs negative", (c) => c.watch("", { minIntervalMs: -1 }), RangeError],
  ["watchSummaries top zero", (c) => c.watchSummaries("", { top: 0 }), RangeError],
  ["getSummary top too large", (c) => c.getSummary(OK, { top: 101 }), RangeError],
  ["partitions order bad", (c) => c.partitions(OK, { order: "size" as never }), RangeError],
  ["computeBackoff status out of range", (c) => c.computeBackoff(OK, { attempt: 1, status: 1000 }), RangeError],
  ["putResource limit period missing", (c) => c.putResource(OK, { limits: [{ dimension: "requests", amount: 1 } as never] }), TypeError],
  ["putResource limit amount zero", (c) => c.putResource(OK, { limits: [{ dimension: "requests", amount: 0, periodMs: 1000 }] }), RangeError],
  ["putResource backoff kind bad", (c) => c.putResource(OK, { backoff: { kind: "linear" as never } }), RangeError],
  ["putResource unknown field", (c) => c.putResource(OK, { limit: [] } as never), TypeError],
  ["report without a response or status", async (c) => {
    // A Permit is only made by acquire; reportArgs checks run before the done check, as here.
    const { Permit } = await import("../src/index.js");
    const p = new Permit({ reportPermit: () => Promise.reject(new Error("called")), releasePermit: () => Promise.resolve(), warn: () => undefined }, {
      resource: OK, partition: "", cost: {}, permitId: "x", leaseExpiresAt: undefined, waitedMs: 0, remaining: {},
    });
    void c;
    return p.report();
  }, TypeError],
];

describe("errors", () => {
  describe("bad arguments throw before any call", () => {
    let dead: Client;
    before(async () => {
      dead = new Client({ target: `127.0.0.1:${await freePort()}`, timeoutMs: 2_000 });
    });
    after(async () => {
      await dead?.close();
    });
    for (const [name, call, cls] of CASES) {
      it(name, T, async () => {
        let thrown: unknown;
        try {
          await call(dead);
        } catch (e) {
          thrown = e;
        }
        assert.ok(thrown instanceof cls, `${name}: expected ${cls.name}, got ${String(thrown)}`);
        assert.ok(!(thrown instanceof PermitdError), `${name}: reached the server`);
      });
    }
    it("client options", () => {
      assert.throws(() => new Client({ target: "" }), RangeError);
      assert.throws(() => new Client({ target: "ftp://x" }), RangeError);
      assert.throws(() => new Client({ transport: "rest" as never }), TypeError);
      assert.throws(() => new Client({ transport: "grpc", httpVersion: "1.1" }), RangeError);
      assert.throws(() => new Client({ timeoutMs: 0 }), RangeError);
      assert.throws(() => new Client({ timeout: 10 } as never), /use timeoutMs/);
      assert.throws(() => new Client({ token: "bad\ntoken" }), RangeError);
      assert.equal(new Client({ target: "127.0.0.1:1" }).target, "http://127.0.0.1:1");
    });
  });

  for (const kind of TRANSPORTS) {
    it(`a closed port is PermitdUnavailable over ${kind}`, T, async () => {
      const c = new Client({ target: `127.0.0.1:${await freePort()}`, transport: kind, timeoutMs: 5_000 });
      const e = await c.acquire("any:thing").catch((err: unknown) => err);
      assert.ok(e instanceof PermitdUnavailable, String(e));
      assert.equal(e.code, "UNAVAILABLE");
      assert.ok(e.cause !== undefined);
      await c.close();
    });
  }

  describe("tokens", () => {
    let server: Server;
    const saved = process.env["PERMITD_TOKEN"];
    before(async () => {
      delete process.env["PERMITD_TOKEN"];
      server = await startServer(
        `[auth]\nmode = "tokens"\n\n${principal("admin", "admin", ADMIN)}${principal("worker", "worker", WORKER)}${principal("viewer", "viewer", VIEWER)}`,
      );
      const admin = clientFor(server, "grpc", { token: ADMIN });
      await admin.putResource("ts:auth", { limits: [{ dimension: "requests", amount: 1000, periodMs: 60_000 }], limitsKnown: true });
      await admin.close();
    });
    after(async () => {
      if (saved !== undefined) process.env["PERMITD_TOKEN"] = saved;
      await server?.stop();
    });

    for (const kind of TRANSPORTS) {
      it(`UNAUTHENTICATED without a token or with an unknown one, PERMISSION_DENIED beyond the role, over ${kind}`, T, async () => {
        const none = clientFor(server, kind);
        const e1 = await none.acquire("ts:auth").catch((e: unknown) => e);
        assert.ok(e1 instanceof Unauthenticated, String(e1));
        assert.equal(e1.code, "UNAUTHENTICATED");
        await none.close();

        const wrong = clientFor(server, kind, { token: "pmt_nobody_has_this" });
        const e2 = await wrong.getQuota("ts:auth").catch((e: unknown) => e);
        assert.ok(e2 instanceof Unauthenticated, String(e2));
        assert.ok(!e2.message.includes("pmt_nobody"), "the token leaked into the message");
        await wrong.close();

        const viewer = clientFor(server, kind, { token: VIEWER });
        const e3 = await viewer.acquire("ts:auth").catch((e: unknown) => e);
        assert.ok(e3 instanceof PermissionDenied, String(e3));
        assert.equal(e3.code, "PERMISSION_DENIED");
        assert.match(e3.message, /viewer/);
        assert.equal((await viewer.getQuota("ts:auth")).resource, "ts:auth");
        await viewer.close();

        const worker = clientFor(server, kind, { token: WORKER });
        await worker.withPermit("ts:auth", async (p) => {
          assert.ok(p.permitId);
        });
        for await (const u of worker.watch("ts:", { signal: AbortSignal.timeout(20_000) })) {
          assert.equal(u.resource, "ts:auth");
          break;
        }
        await worker.close();
      });
    }

    it("the token comes from $PERMITD_TOKEN when not given", T, async () => {
      process.env["PERMITD_TOKEN"] = WORKER;
      try {
        const c = clientFor(server, "connect");
        await (await c.acquire("ts:auth")).release();
        await c.close();
      } finally {
        delete process.env["PERMITD_TOKEN"];
      }
    });
  });
});
