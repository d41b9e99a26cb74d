#!/usr/bin/env bash
# The coordination matrix: every upstream shape (rate x burst x header dialect) against every
# fleet (workers x processes) and every mode (known, high, low, bare, naive), each cell with its
# own upstream and resource, PARALLEL cells at once, against one release server.
# Writes bench/coord-matrix.md: the table (worst cells first) and one JSON line per cell.
#   scripts/bench-coord.sh                      the full matrix, 60 s per cell (hours)
#   DURATION=10s PARALLEL=8 scripts/bench-coord.sh
#   RATES=3,10 BURSTS=1,rate DIALECTS=openai,none WORKERS=8 PROCESSES=1 MODES=known,bare,naive \
#     DURATION=10s scripts/bench-coord.sh      a slice of it
# Server on core 0, the benchmark on core 1 when the machine has two cores and taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60s}
PARALLEL=${PARALLEL:-8}
RATES=${RATES:-1,3,10,50}
BURSTS=${BURSTS:-1,rate,10rate}
DIALECTS=${DIALECTS:-ietf,openai,anthropic,github,classic,none}
WORKERS=${WORKERS:-8,50,200}
PROCESSES=${PROCESSES:-1,3}
MODES=${MODES:-known,high,low,bare,naive}
OUT=${OUT:-bench/coord-matrix.md}
PORT=${PORT:-50998}
cargo build --release --locked
BIN=target/release/permitd
DATA=$(mktemp -d)
RAW="$DATA/out.txt"
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT

pin_server=() pin_bench=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c 0) pin_bench=(taskset -c 1)
fi

"${pin_server[@]}" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/d" --log-filter warn &
SERVER=$!
for _ in $(seq 100); do
  # NOT_FOUND for an unknown resource is an answer: the server is up.
  "$BIN" quota x --server "127.0.0.1:$PORT" 2>&1 | grep -q NOT_FOUND && break
  sleep 0.1
done

args=(bench-coord --matrix --server "127.0.0.1:$PORT" --duration "$DURATION" --parallel "$PARALLEL"
  --rates "$RATES" --bursts "$BURSTS" --dialects "$DIALECTS" --workers "$WORKERS"
  --processes "$PROCESSES" --modes "$MODES")
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
"${pin_bench[@]}" "$BIN" "${args[@]}" | tee "$RAW"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

cells=$(grep -c '^{' "$RAW" || true)
missed=$(grep -c '"target_met":false' "$RAW" || true)
{
  echo "# permitd coordination matrix"
  echo
  echo "$started, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), release build."
  echo "\`permitd ${args[*]}\`"
  echo
  echo "$cells cells, $missed missed their target. Targets: known: 0 refused and utilisation >= 0.95;"
  echo "high/low/bare with headers: refused < 1 % and utilisation >= 0.90; without headers (\`none\`):"
  echo "refused < 5 % and utilisation >= 0.80; every mode no worse than naive of the same rate, burst,"
  echo "workers and processes (no larger refused share, utilisation at most 5 points below)."
  echo
  echo '```'
  grep -v '^{' "$RAW"
  echo '```'
  echo
  echo "One JSON line per cell, worst first:"
  echo
  echo '```json'
  grep '^{' "$RAW"
  echo '```'
} > "$OUT"
echo "wrote $OUT"
