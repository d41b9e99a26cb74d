/**
 * The transports besides the two every main test runs over: Connect with protobuf bodies
 * over HTTP/2 and over HTTP/1.1, and a Connect `Transport` the caller made (what a browser
 * or edge runtime passes), all on the same port as gRPC.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createConnectTransport } from "@connectrpc/connect-node";

import { Client, NotFound } from "../src/index.js";
import { makeResource, startServer, type Server } from "./helpers.js";

const T = { timeout: 30_000 };

async function roundTrip(client: Client, tag: string): Promise<void> {
  const res = await makeResource(client, tag, { limits: [{ dimension: "requests", amount: 10, periodMs: 60_000 }] });
  const out = await client.withPermit(res, (p) => p.report({ status: 200, headers: { "x-ratelimit-limit": "8", "x-ratelimit-remaining": "6" } }));
  assert.ok(out.learned.some((l) => l.limit === 8), JSON.stringify(out.learned));
  assert.equal((await client.getQuota(res)).grantedTotal, 1);
  await assert.rejects(client.getQuota("ts:none"), NotFound);
  for await (const u of client.watch(res, { signal: AbortSignal.timeout(20_000) })) {
    assert.equal(u.resource, res);
    break;
  }
}

describe("transports", () => {
  let server: Server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  it("Connect, protobuf bodies, HTTP/2", T, async () => {
    const c = new Client({ target: server.baseUrl, transport: "connect", httpVersion: "2", useBinaryFormat: true });
    await roundTrip(c, "connect-proto-h2");
    await c.close();
  });

  it("Connect, protobuf bodies, HTTP/1.1", T, async () => {
    const c = new Client({ target: server.baseUrl, transport: "connect", useBinaryFormat: true });
    await roundTrip(c, "connect-proto-h1");
    await c.close();
  });

  it("Connect, JSON bodies, HTTP/1.1 (the defaults)", T, async () => {
    const c = new Client({ target: server.baseUrl, transport: "connect" });
    await roundTrip(c, "connect-json-h1");
    await c.close();
  });

  it("a Connect Transport of the caller's own", T, async () => {
    const transport = createConnectTransport({ baseUrl: server.baseUrl, httpVersion: "1.1", useBinaryFormat: false });
    const c = new Client({ transport });
    await roundTrip(c, "own-transport");
    await c.close();
    assert.throws(() => new Client({ transport, httpVersion: "2" }), TypeError);
  });
});
