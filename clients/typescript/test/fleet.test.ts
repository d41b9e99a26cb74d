/**
 * One fleet, four kinds of worker, one bucket: a Node service over gRPC and over Connect, a
 * curl script (HTTP/JSON), and a Python worker (the Python client, when its venv is there:
 * scripts/test.sh builds it first; under CI=true it must be) get, report and release
 * permits against the same resource, and the bucket counts every one of them.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";

import { Client } from "../src/index.js";
import { clientFor, REPO, startServer, type Server } from "./helpers.js";

const run = promisify(execFile);
const T = { timeout: 60_000 };

/** curl as a shell script uses it: a JSON POST, the answer parsed. */
async function curl(server: Server, method: string, body: unknown): Promise<{ status: number; json: any }> {
  const { stdout } = await run("curl", [
    "-sS",
    "--max-time",
    "10",
    "-H",
    "content-type: application/json",
    "-d",
    JSON.stringify(body),
    "-w",
    "\n%{http_code}",
    `${server.baseUrl}/permitd.v1.Permits/${method}`,
  ]);
  const cut = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(cut + 1)), json: JSON.parse(stdout.slice(0, cut)) };
}

function python(): string | undefined {
  const p = process.env.PERMITD_PYTHON ?? path.join(REPO, "clients", "python", ".venv", "bin", "python");
  return existsSync(p) ? p : undefined;
}

describe("one fleet, one bucket", () => {
  let server: Server;
  let grpc: Client;
  let connect: Client;

  before(async () => {
    server = await startServer();
    grpc = clientFor(server, "grpc");
    connect = clientFor(server, "connect");
  });
  after(async () => {
    await grpc?.close();
    await connect?.close();
    await server?.stop();
  });

  it("Node (gRPC and Connect), curl and Python share the resource's limit", T, async () => {
    const py = python();
    if (py === undefined && process.env.CI === "true") {
      assert.fail("the Python client's venv (clients/python/.venv) is needed under CI=true: run clients/python/scripts/test.sh first");
    }
    const workers = py === undefined ? 4 : 5;
    await grpc.putResource("fleet:x", {
      limits: [{ dimension: "requests", amount: workers, periodMs: 60_000 }],
      limitsKnown: true,
    });

    // Node over gRPC, and over Connect: acquire, call, report.
    for (const c of [grpc, connect]) {
      const outcome = await c.withPermit("fleet:x", { maxWaitMs: 1_000 }, async (p) => p.report({ status: 200, headers: {} }));
      assert.equal(outcome.retry, false);
    }
    // curl: acquire, report; and one acquired, then released with a refund and taken again.
    const got = await curl(server, "AcquirePermit", { resource: "fleet:x" });
    assert.equal(got.status, 200, JSON.stringify(got.json));
    assert.equal(got.json.granted, true);
    const reported = await curl(server, "ReportOutcome", { permitId: got.json.permitId, statusCode: 200, headers: { "content-type": "text/plain" } });
    assert.equal(reported.status, 200, JSON.stringify(reported.json));
    const refunded = await curl(server, "AcquirePermit", { resource: "fleet:x" });
    assert.equal(refunded.json.granted, true);
    const released = await curl(server, "ReleasePermit", { permitId: refunded.json.permitId, refund: true });
    assert.equal(released.status, 200, JSON.stringify(released.json));
    const again = await curl(server, "AcquirePermit", { resource: "fleet:x" });
    assert.equal(again.json.granted, true, "the refund gave the unit back");
    await curl(server, "ReportOutcome", { permitId: again.json.permitId, statusCode: 200 });

    // Python: the Python client's own permit context.
    if (py !== undefined) {
      const script = [
        "import sys, permitd",
        "with permitd.Client(sys.argv[1]) as c:",
        "    with c.permit('fleet:x', max_wait=1) as p:",
        "        p.report(status=200, headers={})",
        "print('ok')",
      ].join("\n");
      const { stdout } = await run(py, ["-c", script, `127.0.0.1:${server.port}`]);
      assert.equal(stdout.trim(), "ok");
    }

    // Every unit is spent: the next caller, whichever, is denied with the exact wait.
    const denied = await curl(server, "AcquirePermit", { resource: "fleet:x" });
    assert.equal(denied.status, 200);
    assert.notEqual(denied.json.granted, true, JSON.stringify(denied.json));
    assert.match(denied.json.retryAfter, /^\d+(\.\d+)?s$/);
    const q = await connect.getQuota("fleet:x");
    // Granted: 2 Node + 3 curl (the refunded one included) + Python; one refund gave one back.
    assert.equal(q.grantedTotal, workers + 1, JSON.stringify(q));
    assert.equal(q.deniedTotal, 1);
    const requests = q.dimensions.find((d) => d.dimension === "requests");
    assert.equal(requests?.remaining, 0);
  });
});
