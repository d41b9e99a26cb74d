/**
 * The cache over the real Cache service, over gRPC and Connect: a cached function runs once
 * per distinct arguments, under a key that is the same in every process.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { Client, stableHash } from "../src/index.js";
import { clientFor, startServer, TRANSPORTS, type Server } from "./helpers.js";

const T = { timeout: 30_000 };
const ns = (): string => `ts-test-${randomUUID().slice(0, 12)}`;

describe("cache", () => {
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

      it("cached calls the function once per arguments and invalidates", T, async () => {
        const calls: unknown[][] = [];
        const predict = client.cached(ns(), 60_000, async function predict(text: string, opts?: { model?: string }) {
          calls.push([text, opts]);
          return { label: text.toUpperCase(), model: opts?.model ?? "small" };
        });
        assert.deepEqual(await predict("hi"), { label: "HI", model: "small" });
        assert.deepEqual(await predict("hi"), { label: "HI", model: "small" });
        assert.deepEqual(await predict("hi", undefined), { label: "HI", model: "small" }); // same call
        assert.equal(calls.length, 1);
        await predict("hi", { model: "large" });
        await predict("ho");
        assert.equal(calls.length, 3);
        // Object key order does not matter.
        assert.equal(await predict.cacheKey("x", { model: "m" }), await predict.cacheKey("x", { model: "m" }));
        assert.equal(await predict.invalidate("hi"), true);
        assert.equal(await predict.invalidate("hi"), false);
        await predict("hi");
        assert.equal(calls.length, 4);
        assert.equal(predict.name, "predict");
      });

      it("keys are a SHA-256 of the name and arguments, readable with cacheGet", T, async () => {
        const name = ns();
        let calls = 0;
        const features = client.cached(name, 60_000, async (d: Record<string, number>) => {
          calls++;
          return Object.values(d).reduce((a, b) => a + b, 0);
        }, { name: "features" });
        assert.equal(await features({ a: 1, b: 2 }), 3);
        assert.equal(await features({ b: 2, a: 1 }), 3);
        assert.equal(calls, 1);
        const k = await features.cacheKey({ a: 1, b: 2 });
        assert.equal(k, await stableHash({ fn: "features", args: [{ a: 1, b: 2 }] }));
        assert.equal(new TextDecoder().decode(await client.cacheGet(name, k)), "3");
      });

      it("custom codecs, cacheGet/Put/Delete, and unhashable arguments refused before any call", T, async () => {
        const blob = client.cached(ns(), 60_000, async (n: number) => Uint8Array.from({ length: n }, (_, i) => i), {
          name: "blob",
          encode: (v) => v as Uint8Array,
          decode: (b) => b,
        });
        assert.deepEqual([...(await blob(5))], [0, 1, 2, 3, 4]);
        assert.deepEqual([...(await blob(5))], [0, 1, 2, 3, 4]);

        const space = ns();
        assert.equal(await client.cacheGet(space, "k"), undefined);
        await client.cachePut(space, "k", "value", 60_000);
        assert.equal(new TextDecoder().decode(await client.cacheGet(space, "k")), "value");
        assert.equal(await client.cacheDelete(space, "k"), true);
        assert.equal(await client.cacheDelete(space, "k"), false);

        let calls = 0;
        const f = client.cached(ns(), 60_000, async (x: unknown) => {
          calls++;
          return x === undefined ? 0 : 1;
        }, { name: "f" });
        await assert.rejects(f(new (class Thing {})()), TypeError);
        await assert.rejects(f(() => 1), TypeError);
        assert.equal(calls, 0);
        assert.throws(() => client.cached("", 1000, f), RangeError);
        assert.throws(() => client.cached(ns(), -5, f), RangeError);
        assert.throws(() => client.cached(ns(), 1000, 42 as never), TypeError);
        assert.throws(() => client.cached(ns(), 1000, (() => async () => 1)()), /needs options.name/);
      });
    });
  }
});
