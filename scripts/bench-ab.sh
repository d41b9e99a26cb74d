#!/usr/bin/env bash
# A/B of the plaintext hot path: the server built at REV against the working tree's, in
# alternating rounds (ROUNDS, default 5) of Health/Check and granted AcquirePermit at
# concurrency 64, server on core 0, load on core 1. Prints each round and the means.
#   scripts/bench-ab.sh 2fd1ea2     # e.g. the build before auth
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/bench-ab.sh REV}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4s}
PORT=${PORT:-50991}
OLD_DIR=$(mktemp -d)
trap 'git worktree remove --force "$OLD_DIR/src" >/dev/null 2>&1 || true; rm -rf "$OLD_DIR"' EXIT
git worktree add -f --detach "$OLD_DIR/src" "$REV" >/dev/null
(cd "$OLD_DIR/src" && CARGO_TARGET_DIR="$OLD_DIR/target" cargo build --release --locked)
cargo build --release --locked
OLD="$OLD_DIR/target/release/permitd" NEW=target/release/permitd
OUT=$(mktemp)
for _ in $(seq "$ROUNDS"); do
  for b in OLD NEW; do
    BIN=${!b} D=$(mktemp -d)
    taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$D" --log-filter warn &
    S=$!
    for _ in $(seq 100); do "$NEW" quota x --server "127.0.0.1:$PORT" 2>&1 | grep -q NOT_FOUND && break; sleep 0.1; done
    json=$(taskset -c 1 "$NEW" bench --server "127.0.0.1:$PORT" --concurrency 64 --phases health,grant --duration "$DURATION" --server-pid "$S" --json)
    kill "$S"; wait "$S" 2>/dev/null || true; rm -rf "$D"
    echo "$b $json" | tee -a "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [l.split(" ", 1) for l in open(sys.argv[1]) if l.strip()]
for b in ("OLD", "NEW"):
    ph = [json.loads(j)["phases"] for n, j in rows if n == b]
    mean = lambda f: sum(map(f, ph)) / len(ph)
    h, g = mean(lambda p: p["health"]["cpu_us_per_req"]), mean(lambda p: p["grant"]["cpu_us_per_req"])
    r = mean(lambda p: p["grant"]["rps"] / p["health"]["rps"])
    print(f"{b}: health {h:.2f} us/req, grant {g:.2f} us/req, grant/health throughput {r:.3f}x, cpu {g / h:.3f}x")
PY
