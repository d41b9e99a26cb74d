/**
 * The README's first example runs as written against the real server, with the upstream's
 * URL pointed at a local one (and its `headers` and `body` defined), importing the package
 * by its name as a user would.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, it } from "node:test";
import { promisify } from "node:util";

import { clientFor, PKG_ROOT, startServer, Upstream, type Server } from "./helpers.js";

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

it("the README example runs", { timeout: 60_000 }, async () => {
  const readme = readFileSync(path.join(PKG_ROOT, "README.md"), "utf8");
  const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, "README has no ts example");
  assert.ok(block.split("\n").filter((l) => l.trim()).length <= 10, "the first example is longer than 10 lines");
  const p = upstream.path();
  const url = upstream.script(p, {
    status: 200,
    headers: { "x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "88000", "x-ratelimit-reset-tokens": "1s" },
    body: { choices: [] },
  });
  const code = block.replace("https://api.openai.com/v1/chat/completions", url);
  assert.notEqual(code, block, "the example's URL was not found");
  const admin = clientFor(server, "grpc");
  // A guessed limit (limitsKnown: false), which the tokens headers of the answer replace.
  await admin.putResource("openai:gpt-4o", { limits: [{ dimension: "tokens", amount: 100_000, periodMs: 60_000 }], limitsKnown: false });
  // Inside the package, so that `import "@permitd/client"` resolves to it by name.
  const file = path.join(PKG_ROOT, "dist", "test", "readme-example.mjs");
  writeFileSync(file, `const headers = { "content-type": "application/json" };\nconst body = "{}";\n${code}\nconsole.log(JSON.stringify(answer));\n`);
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [file], {
      env: { ...process.env, PERMITD_TARGET: server.baseUrl },
      timeout: 50_000,
    });
    assert.deepEqual(JSON.parse(stdout), { choices: [] });
  } finally {
    rmSync(file, { force: true });
  }
  assert.equal(upstream.hitsOf(p).length, 1);
  const q = await admin.getQuota("openai:gpt-4o");
  const tokens = q.dimensions.find((d) => d.dimension === "tokens");
  assert.equal(tokens?.limit, 90_000, JSON.stringify(q.dimensions)); // learned from the report
  assert.equal(tokens?.source, "LEARNED");
  await admin.close();
});
