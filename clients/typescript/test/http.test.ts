/**
 * The pure parts, no server: how responses and headers of each HTTP client are read, which
 * errors count as "no answer", how RPC errors map to classes, and stable hashing (equal to
 * the Python client's for JSON-like values).
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import { canonicalJson, InvalidArgument, isNetworkError, normalizeHeaders, NotFound, PermitdError, PermitdUnavailable, stableHash } from "../src/index.js";
import { mapRpcError } from "../src/errors.js";
import { bodyOf, responseOfError, responseStatus } from "../src/http.js";
import { reportArgs } from "../src/permit.js";

describe("headers and responses", () => {
  it("normalizes Headers, objects, Maps, pairs and AxiosHeaders to lower-cased strings", () => {
    const h = new Headers([["X-RateLimit-Limit", "7"], ["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]);
    assert.deepEqual(normalizeHeaders(h), { "x-ratelimit-limit": "7", "set-cookie": "a=1, b=2" });
    assert.deepEqual(normalizeHeaders({ "Retry-After": 3, "set-cookie": ["a", "b"], absent: undefined }), { "retry-after": "3", "set-cookie": "a, b" });
    assert.deepEqual(normalizeHeaders(new Map([["A", "1"]])), { a: "1" });
    assert.deepEqual(normalizeHeaders([["A", "1"], ["a", "2"]]), { a: "1, 2" });
    class AxiosHeaders {
      constructor(readonly h: Record<string, string>) {}
      toJSON(): Record<string, string> {
        return this.h;
      }
    }
    assert.deepEqual(normalizeHeaders(new AxiosHeaders({ "X-Y": "z" })), { "x-y": "z" });
    assert.throws(() => normalizeHeaders("a: b"), TypeError);
    assert.throws(() => normalizeHeaders([["a"]]), TypeError);
    assert.throws(() => normalizeHeaders({ a: { b: 1 } }), TypeError);
  });

  it("reads statusCode (undici, node:http) or status (fetch, axios)", () => {
    assert.equal(responseStatus({ statusCode: 429, headers: {} }), 429);
    assert.equal(responseStatus(new Response(null, { status: 503 })), 503);
    assert.throws(() => responseStatus({ code: 200 }), TypeError);
    assert.throws(() => responseStatus({ status: 1000 }), RangeError);
    const rep = reportArgs({ status: 200, headers: { a: "1" } }, { headers: [["b", "2"]], status: 201, attempt: 2 });
    assert.deepEqual(rep, { status: 201, headers: { a: "1", b: "2" }, actualCost: {}, attempt: 2, answeredAt: undefined });
    assert.throws(() => reportArgs(undefined, {}), TypeError);
    assert.throws(() => reportArgs({ status: 200 }, { attempt: 0 }), RangeError);
  });

  it("finds the response an HTTP error carries", () => {
    const r = { status: 429, headers: { "retry-after": "1" } };
    assert.equal(responseOfError(Object.assign(new Error("axios"), { response: r })), r);
    const undiciLike = Object.assign(new Error("Response status code 503"), { statusCode: 503, headers: {} });
    assert.equal(responseOfError(undiciLike), undiciLike);
    assert.equal(responseOfError(new Error("plain")), undefined);
  });

  it("tells network errors from bugs", () => {
    assert.ok(isNetworkError(new TypeError("fetch failed", { cause: Object.assign(new Error("x"), { code: "ECONNREFUSED" }) })));
    assert.ok(isNetworkError(Object.assign(new Error("socket"), { code: "UND_ERR_SOCKET" })));
    assert.ok(isNetworkError(new DOMException("timed out", "TimeoutError")));
    assert.ok(!isNetworkError(new TypeError("x is not a function")));
    assert.ok(!isNetworkError(new Error("bug")));
  });

  it("reads a body: an unread fetch Response from a clone, axios data, explicit bytes", async () => {
    const r = new Response('{"a":1}');
    assert.equal(new TextDecoder().decode(await bodyOf(r)), '{"a":1}');
    assert.deepEqual(await r.json(), { a: 1 }); // still readable by the caller
    assert.equal(new TextDecoder().decode(await bodyOf({ status: 200, data: { b: 2 } })), '{"b":2}');
    assert.equal(new TextDecoder().decode(await bodyOf({ status: 200, body: "text" })), "text");
    assert.equal((await bodyOf(r)).length, 0); // consumed: unknown
  });
});

describe("errors map by code", () => {
  it("maps Connect codes to classes with gRPC code names", () => {
    const u = mapRpcError(new ConnectError("down", Code.Unavailable), "Permits.AcquirePermit");
    assert.ok(u instanceof PermitdUnavailable);
    assert.equal(u.code, "UNAVAILABLE");
    assert.match(u.message, /^Permits\.AcquirePermit: down/);
    assert.ok(mapRpcError(new ConnectError("late", Code.DeadlineExceeded), "x") instanceof PermitdUnavailable);
    assert.ok(mapRpcError(new ConnectError("bad", Code.InvalidArgument), "x") instanceof InvalidArgument);
    assert.ok(mapRpcError(new ConnectError("gone", Code.NotFound), "x") instanceof NotFound);
    const other = mapRpcError(new ConnectError("no", Code.FailedPrecondition), "x");
    assert.ok(other instanceof PermitdError);
    assert.equal(other.code, "FAILED_PRECONDITION");
    assert.equal(other.name, "PermitdError");
  });
});

describe("stable hashing", () => {
  it("is the Python client's hash for JSON-like values, whatever the key order", async () => {
    // permitd.stable_hash({"fn": "features", "arguments": {"d": {"a": 1, "b": 2}}}) in Python.
    const py = "c924bcbfe4b0d29ebb69b486f1820c9d650cc79ced3f355eb43c931d57635e3f";
    assert.equal(await stableHash({ fn: "features", arguments: { d: { a: 1, b: 2 } } }), py);
    assert.equal(await stableHash({ arguments: { d: { b: 2, a: 1 } }, fn: "features" }), py);
    // Python's json.dumps of the same values.
    assert.equal(canonicalJson({ b: [1, 1.5, 1e-5, "é\n", null, true], a: 12345678901234567890n }), '{"a":12345678901234567890,"b":[1,1.5,1e-05,"é\\n",null,true]}');
    assert.equal(canonicalJson([NaN, Infinity]), '[{"$float":"nan"},{"$float":"inf"}]');
    assert.equal(canonicalJson(new Uint8Array([1, 2])), '{"$bytes":"AQI="}');
    assert.equal(canonicalJson(new Set([2, 1])), '{"$set":[1,2]}');
    assert.throws(() => canonicalJson(new (class X {})()), TypeError);
    assert.throws(() => canonicalJson(() => 1), TypeError);
  });
});
