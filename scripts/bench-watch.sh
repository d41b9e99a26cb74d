#!/usr/bin/env bash
# Live views at scale (issue 19): AcquirePermit throughput with and without 1 000 Watch
# subscribers (half never reading) over one resource with 100 000 live partitions, and the
# server's RSS growth, in one run of interleaved rounds (examples/watch_scale.rs). Server on
# core 0, driver on 1.
#   scripts/bench-watch.sh                      writes bench/watch.md
#   PARTITIONS=20000 SUBSCRIBERS=300 scripts/bench-watch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITIONS=${PARTITIONS:-100000}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
DURATION_SECS=${DURATION_SECS:-4}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-bench/watch.md}
PORT=${PORT:-50995}
cargo build --release --locked
cargo build --release --locked --example watch_scale
BIN=target/release/permitd
DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
cat > "$DATA/permitd.toml" <<TOML
[limits]
max_partitions_per_resource = $((PARTITIONS + 1000))
max_watch_streams_per_tenant = $((SUBSCRIBERS + 100))
TOML
taskset -c 0 "$BIN" serve --config "$DATA/permitd.toml" --listen "127.0.0.1:$PORT" --data-dir "$DATA/d" --log-filter warn &
SERVER=$!
for _ in $(seq 100); do
  [[ $("$BIN" quota x --server "127.0.0.1:$PORT" 2>&1) == *NOT_FOUND* ]] && break
  sleep 0.1
done
{
  echo "# Live views at scale"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, server on core 0, driver on core 1. \`scripts/bench-watch.sh\`"
  echo
  echo '```'
  taskset -c 1 target/release/examples/watch_scale --server "127.0.0.1:$PORT" --server-pid "$SERVER" \
    --partitions "$PARTITIONS" --subscribers "$SUBSCRIBERS" --duration-secs "$DURATION_SECS" --rounds "$ROUNDS"
  echo '```'
} | tee "$OUT"
