#!/usr/bin/env bash
# Benchmarks of the permit hot path against two floors measured in the same run: the
# server's own Health/Check, and a bare tonic server's (examples/floor.rs: health only, a
# current-thread runtime). Servers pinned to core 0, load generator to core 1.
#   scripts/bench.sh            full sweep, writes bench/results.md
#   DURATION=2s scripts/bench.sh  shorter phases
#   COORD_DURATION=5s scripts/bench.sh  shorter coordination modes (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6s}
OUT=${OUT:-bench/results.md}
PORT=${PORT:-50997}
FLOOR_PORT=${FLOOR_PORT:-50990}
cargo build --release --locked
cargo build --release --locked --example floor
BIN=target/release/permitd
DATA=$(mktemp -d)
taskset -c 0 target/release/examples/floor "127.0.0.1:$FLOOR_PORT" &
FLOOR=$!
trap 'kill "$SERVER" "$FLOOR" 2>/dev/null || true; rm -rf "$DATA"' EXIT
BARE=(--floor-server "127.0.0.1:$FLOOR_PORT" --floor-pid "$FLOOR")

start_server() {
  taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/d$1" --log-filter warn &
  SERVER=$!
  for _ in $(seq 100); do
    # NOT_FOUND for an unknown resource is an answer: the server is up.
    [[ $("$BIN" quota x --server "127.0.0.1:$PORT" 2>&1) == *NOT_FOUND* ]] && break
    sleep 0.1
  done
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

{
  echo "# permitd benchmarks"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "server on core 0, load generator on core 1 (\`taskset\`), $DURATION per phase in 5 interleaved rounds."
  echo "\`x_floor\`: throughput / Health/Check's; \`cpu_x\`: server CPU per request / Health/Check's;"
  echo "\`x_bare\`, \`cpu_x_bare\`: the same against the bare tonic server's Health/Check (\`floor\`)."
  echo
} > "$OUT"

n=0
for conc in 1 16 64 256; do
  n=$((n+1)); start_server "$n"
  echo "## concurrency $conc, 1 bucket" >> "$OUT"
  echo '```' >> "$OUT"
  taskset -c 1 "$BIN" bench --server "127.0.0.1:$PORT" --concurrency "$conc" --duration "$DURATION" --server-pid "$SERVER" "${BARE[@]}" | tee -a "$OUT"
  echo '```' >> "$OUT"
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
done

for buckets in 1000 1000000; do
  n=$((n+1)); start_server "$n"
  before=$(rss_kib "$SERVER")
  echo "## concurrency 64, $buckets buckets" >> "$OUT"
  echo '```' >> "$OUT"
  taskset -c 1 "$BIN" bench --server "127.0.0.1:$PORT" --concurrency 64 --buckets "$buckets" --phases health,grant --duration "$DURATION" --server-pid "$SERVER" | tee -a "$OUT"
  echo '```' >> "$OUT"
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
done

# Envoy's ShouldRateLimit: one descriptor with a per-value key over 100 values, as a gateway
# sends it, against Health/Check and AcquirePermit in the same run.
cat > "$DATA/rls.yaml" <<'YAML'
domain: bench
descriptors:
  - key: user
    rate_limit:
      unit: second
      requests_per_unit: 4000000000
YAML
n=$((n+1))
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/d$n" --log-filter warn --rls-config "$DATA/rls.yaml" &
SERVER=$!
for _ in $(seq 100); do
  [[ $("$BIN" quota x --server "127.0.0.1:$PORT" 2>&1) == *NOT_FOUND* ]] && break
  sleep 0.1
done
echo "## Envoy ShouldRateLimit: concurrency 64, one descriptor over 100 values" >> "$OUT"
echo '```' >> "$OUT"
taskset -c 1 "$BIN" bench --server "127.0.0.1:$PORT" --concurrency 64 --buckets 100 --phases health,rls,grant --duration "$DURATION" --server-pid "$SERVER" | tee -a "$OUT"
echo '```' >> "$OUT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

# The batch form: AcquirePermits of 100 permits against unary AcquirePermit, in permits/s.
n=$((n+1)); start_server "$n"
echo "## batch: AcquirePermits of 100 permits, concurrency 64, 1 bucket" >> "$OUT"
echo '```' >> "$OUT"
taskset -c 1 "$BIN" bench --server "127.0.0.1:$PORT" --concurrency 64 --phases health,grant,batch --batch 100 --duration "$DURATION" --server-pid "$SERVER" | tee -a "$OUT"
echo '```' >> "$OUT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

# HTTP/JSON: AcquirePermit as Connect's unary POST (HTTP/1.1, a keep-alive connection per
# worker, as curl-like tools use it) against the same server's gRPC AcquirePermit.
n=$((n+1)); start_server "$n"
echo "## HTTP/JSON (Connect) AcquirePermit vs gRPC, concurrency 64, 1 bucket" >> "$OUT"
echo '```' >> "$OUT"
taskset -c 1 "$BIN" bench --server "127.0.0.1:$PORT" --concurrency 64 --phases health,grant,json --duration "$DURATION" --server-pid "$SERVER" | tee -a "$OUT"
echo '```' >> "$OUT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

# Coordination quality: 16 workers sharing a local upstream limited to 50/s, through permitd
# (limit configured; no limit, learned from headers) and on their own (exponential backoff),
# in two header dialects. The whole matrix of upstream shapes is scripts/bench-coord.sh.
n=$((n+1)); start_server "$n"
for dialect in ietf openai; do
  echo "## coordination: 16 workers, upstream token bucket 50/s, $dialect headers, ${COORD_DURATION:-10s} per mode" >> "$OUT"
  echo '```' >> "$OUT"
  taskset -c 1 "$BIN" bench-coord --server "127.0.0.1:$PORT" --duration "${COORD_DURATION:-10s}" --rate 50 --dialect "$dialect" --modes known,bare,naive | tee -a "$OUT"
  echo '```' >> "$OUT"
done
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

# TLS and bearer tokens: one server over TLS with auth on (a throwaway CA made with openssl,
# an admin token minted by `permitd token new`), one plaintext without auth, Health/Check and
# granted AcquirePermit on each at concurrency 64. The TLS run's ratios are against
# Health/Check over TLS; the summary compares TLS with plaintext.
TLS=$DATA/tls; mkdir -p "$TLS"
. scripts/bench-tls.sh
bench_tls "$TLS"
n=$((n+1))
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/d$n" --log-filter warn \
  --config "$TLS/permitd.toml" --tls-cert "$TLS/server.pem" --tls-key "$TLS/server.key" &
SERVER=$!
TLS_ARGS=(--server "https://127.0.0.1:$PORT" --tls-ca "$TLS/ca.pem" --token "$TOKEN")
for _ in $(seq 100); do
  [[ $("$BIN" quota x "${TLS_ARGS[@]}" 2>&1) == *NOT_FOUND* ]] && break
  sleep 0.1
done
echo "## TLS + bearer token, concurrency 64, 1 bucket (floor: Health/Check over TLS)" >> "$OUT"
echo '```' >> "$OUT"
taskset -c 1 "$BIN" bench "${TLS_ARGS[@]}" --concurrency 64 --phases health,grant --duration "$DURATION" --server-pid "$SERVER" | tee -a "$OUT" | tail -1 > "$TLS/tls.json"
echo '```' >> "$OUT"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
n=$((n+1)); start_server "$n"
taskset -c 1 "$BIN" bench --server "127.0.0.1:$PORT" --concurrency 64 --phases health,grant --duration "$DURATION" --server-pid "$SERVER" --json > "$TLS/plain.json"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
echo '```' >> "$OUT"
python3 - "$TLS/tls.json" "$TLS/plain.json" <<'PY' | tee -a "$OUT"
import json, sys
tls, plain = (json.load(open(p)) for p in sys.argv[1:3])
for name in ("health", "grant"):
    t, p = tls["phases"][name], plain["phases"][name]
    print(f"{name:6}  TLS{'+token' if name == 'grant' else '      '} {t['rps']:>7.0f} req/s {t['cpu_us_per_req']:>5.1f} us/req"
          f"   plaintext {p['rps']:>7.0f} req/s {p['cpu_us_per_req']:>5.1f} us/req"
          f"   TLS/plaintext: throughput {t['rps'] / p['rps']:.2f}x, cpu {t['cpu_us_per_req'] / p['cpu_us_per_req']:.2f}x")
g, h = tls["phases"]["grant"], tls["phases"]["health"]
print(f"over TLS, grant with a token vs Health/Check over TLS: throughput {g['rps'] / h['rps']:.2f}x, cpu {g['cpu_us_per_req'] / h['cpu_us_per_req']:.2f}x")
PY
echo '```' >> "$OUT"

# Memory per live bucket: 500 000 partition buckets holding a lease, then 500 000 without, built in-process
# so the count is exact (RSS growth / buckets).
echo "## memory per live bucket" >> "$OUT"
echo '```' >> "$OUT"
cargo test --release --locked --lib memory_per_bucket -- --ignored --nocapture 2>/dev/null | grep '^RESULT' | tee -a "$OUT"
echo '```' >> "$OUT"
echo "wrote $OUT"
