#!/usr/bin/env bash
# The TypeScript client's tests, from a fresh clone: npm ci (versions from
# package-lock.json), the build, then node's test runner against the real permitd.
#
#   clients/typescript/scripts/test.sh
#
# Environment:
#   PERMITD_BIN  the permitd binary to test against (default: target/debug/permitd, built
#                here with `cargo build --locked` so that it matches the source)
#   CI           when "true", a missing Node.js >= 20 or npm fails the run instead of
#                skipping it
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"

missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "clients/typescript: $1: the TypeScript client's tests need Node.js >= 20 and npm (on Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "clients/typescript: SKIPPED: $1 (the tests need Node.js >= 20 and npm)"
  exit 0
}
command -v node >/dev/null 2>&1 || missing "node not found"
command -v npm >/dev/null 2>&1 || missing "npm not found"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] 2>/dev/null || missing "node $(node --version) is older than 20"
echo "clients/typescript: node $(node --version), npm $(npm --version)"

if [ -z "${PERMITD_BIN:-}" ]; then
  command -v cargo >/dev/null 2>&1 || { echo "clients/typescript: set PERMITD_BIN, or install cargo to build permitd" >&2; exit 1; }
  (cd "$repo" && cargo build --locked)
  PERMITD_BIN="$repo/target/debug/permitd"
fi
if [ ! -x "$PERMITD_BIN" ]; then
  echo "clients/typescript: PERMITD_BIN=$PERMITD_BIN is not an executable" >&2
  exit 1
fi
export PERMITD_BIN

cd "$here"
npm ci --no-audit --no-fund
npm run build
npm test
