/**
 * The committed generated code in src/gen/ must match the repo's proto/: this regenerates it
 * into a temporary directory with scripts/gen.sh and compares every file byte for byte, so
 * a proto change without regeneration fails.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { it } from "node:test";

import { PKG_ROOT } from "./helpers.js";

function files(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(path.relative(root, p));
    }
  };
  walk(root);
  return out.sort();
}

it("the generated code matches the protos (run scripts/gen.sh after a proto change)", { timeout: 120_000 }, () => {
  const tmp = mkdtempSync(path.join(tmpdir(), "permitd-ts-gen-"));
  try {
    execFileSync("bash", [path.join(PKG_ROOT, "scripts", "gen.sh"), tmp], { stdio: "pipe", timeout: 110_000 });
    const fresh = path.join(tmp, "src", "gen");
    const committed = path.join(PKG_ROOT, "src", "gen");
    const want = files(fresh);
    assert.deepEqual(files(committed), want, "generated files differ: run clients/typescript/scripts/gen.sh");
    const stale = want.filter((f) => !readFileSync(path.join(fresh, f)).equals(readFileSync(path.join(committed, f))));
    assert.deepEqual(stale, [], `stale generated code: run clients/typescript/scripts/gen.sh and commit`);
    assert.equal(want.length, 5); // one per proto of permitd.v1
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
