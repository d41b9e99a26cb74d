#!/usr/bin/env bash
# What a Redis round trip costs per permit: the same `permitd bench` (c=64, 1 bucket)
# against the embedded default and against a replica over a local redis-server, in one
# run. permitd and Redis share core 0, the load generator runs on core 1. Writes
# bench/cluster.md. Needs redis-server (Debian package) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-3s}"
cargo build --release --locked
BIN=target/release/permitd
OUT=bench/cluster.md
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
RPORT=$((20000 + RANDOM % 10000))
taskset -c 0 redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" &
REDIS=$!
until grep -q "Ready to accept connections" "$WORK/redis.log"; do sleep 0.05; done

run() { # name, extra serve args...
  local name="$1"; shift
  local port=$((30000 + RANDOM % 10000))
  taskset -c 0 "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name" --log-filter warn "$@" &
  local server=$!
  local r0; r0=$(awk '{print $14+$15}' "/proc/$REDIS/stat")
  echo "### $name" | tee -a "$OUT"
  echo '```' >>"$OUT"
  taskset -c 1 "$BIN" bench --server "127.0.0.1:$port" --concurrency 64 --phases health,grant,release \
    --duration "$DURATION" --server-pid "$server" | tee -a "$OUT"
  local r1; r1=$(awk '{print $14+$15}' "/proc/$REDIS/stat")
  echo "redis CPU during the run: $(( (r1 - r0) * 10 )) ms" | tee -a "$OUT"
  echo '```' >>"$OUT"
  kill "$server"; wait "$server" || true
}

{
  echo "# Embedded vs cluster (one replica over a local Redis)"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, permitd and redis-server on core 0, load on core 1, $DURATION per phase."
  echo
} >"$OUT"
run embedded
run cluster --redis-url "redis://127.0.0.1:$RPORT/"
