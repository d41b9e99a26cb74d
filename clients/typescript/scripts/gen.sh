#!/usr/bin/env bash
# Regenerate src/gen/ from the repo's proto/permitd/v1 with buf and protoc-gen-es, both at
# the versions package-lock.json pins (run `npm ci` first).
#
#   scripts/gen.sh            rewrite src/gen/ in place
#   scripts/gen.sh OUT_DIR    write OUT_DIR/src/gen/ instead (the freshness test compares it)
#
# The generated code is committed: after a proto change, run this and commit the result.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
if [ ! -x node_modules/.bin/buf ] || [ ! -x node_modules/.bin/protoc-gen-es ]; then
  echo "clients/typescript: buf and protoc-gen-es are missing: run 'npm ci' in $here first" >&2
  exit 1
fi
export PATH="$here/node_modules/.bin:$PATH"
if [ "$#" -ge 1 ]; then
  mkdir -p "$1"
  buf generate --output "$1"
else
  rm -rf src/gen
  buf generate
fi
