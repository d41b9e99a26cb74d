#!/usr/bin/env bash
# The true floor, measured with a load generator that is lighter than the servers it loads:
# h2load (Debian's nghttp2-client) sends fixed gRPC requests over 4 connections x 16 streams
# (concurrency 64). `permitd bench` drives load through a tonic client, which costs more CPU
# per call than the server it measures, so on one core it cannot saturate a server and its
# floor figures are the client's. Here every server is pinned to core 0 and h2load to core
# 1, and each server's CPU per request is read from /proc around each run.
#   scripts/bench-floor.sh                 5 rounds of 200 000 requests per call
#   ROUNDS=3 REQUESTS=100000 scripts/bench-floor.sh
# Rows: the bare tonic server (examples/floor.rs) Health/Check; permitd Health/Check,
# AcquirePermit (granted), ShouldRateLimit (Envoy RLS, under the limit); then the same over
# TLS with a bearer token against the bare server over TLS (same certificate). Ratios are
# against the bare server's Health/Check in the same transport; medians over the rounds,
# rounds interleaved so drift hits every row alike.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-200000}
OUT=${OUT:-/dev/stdout}
PORT=${PORT:-50997}
FLOOR_PORT=${FLOOR_PORT:-50990}
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
command -v nghttp >/dev/null || { echo "nghttp missing: apt-get install nghttp2-client" >&2; exit 1; }
cargo build --release --locked
cargo build --release --locked --example floor
BIN=${BIN:-target/release/permitd}
W=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$W"' EXIT

# gRPC frames (flag 0, 4-byte big-endian length, protobuf message), encoded by hand: the
# messages are one or two strings.
printf '\x00\x00\x00\x00\x00' > "$W/health"                      # HealthCheckRequest {}
printf '\x00\x00\x00\x00\x0d\x0a\x0bbench:grant' > "$W/grant"     # AcquirePermitRequest {resource}
# RateLimitRequest {domain: "bench", descriptors: [{entries: [{key: "user", value: "u1"}]}]}
printf '\x00\x00\x00\x00\x15\x0a\x05bench\x12\x0c\x0a\x0a\x0a\x04user\x12\x02u1' > "$W/rls"
cat > "$W/rls.yaml" <<'YAML'
domain: bench
descriptors:
  - key: user
    rate_limit:
      unit: second
      requests_per_unit: 4000000000
YAML

# A throwaway CA and server certificate, and an admin token for the TLS rows.
. scripts/bench-tls.sh
bench_tls "$W"

wait_up() { # url, extra args for permitd quota
  local url=$1; shift
  for _ in $(seq 100); do
    # NOT_FOUND for an unknown resource is an answer (and exit status 1): the server is up.
    [[ $("$BIN" quota x --server "$url" "$@" 2>&1) == *NOT_FOUND* ]] && return 0
    sleep 0.1
  done
  echo "server at $url did not start" >&2; exit 1
}

taskset -c 0 target/release/examples/floor "127.0.0.1:$FLOOR_PORT" & BARE=$!; PIDS+=("$BARE")
taskset -c 0 target/release/examples/floor "127.0.0.1:$((FLOOR_PORT+1))" "$W/server.pem" "$W/server.key" &
BARE_TLS=$!; PIDS+=("$BARE_TLS")
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$W/d1" --log-filter warn \
  --rls-config "$W/rls.yaml" & PLAIN=$!; PIDS+=("$PLAIN")
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$((PORT+1))" --data-dir "$W/d2" --log-filter warn \
  --rls-config "$W/rls.yaml" --config "$W/permitd.toml" --tls-cert "$W/server.pem" --tls-key "$W/server.key" &
TLSD=$!; PIDS+=("$TLSD")
wait_up "127.0.0.1:$PORT"
TLS_ARGS=(--tls-ca "$W/ca.pem" --token "$TOKEN")
wait_up "https://127.0.0.1:$((PORT+1))" "${TLS_ARGS[@]}"
# The bench's resources (bench:grant always grants), defined by a short `permitd bench`.
"$BIN" bench --server "127.0.0.1:$PORT" --phases grant --duration 100ms --rounds 1 >/dev/null
"$BIN" bench --server "https://127.0.0.1:$((PORT+1))" "${TLS_ARGS[@]}" --phases grant --duration 100ms --rounds 1 >/dev/null

# name pid url path body [auth]
ROWS=(
  "bare_health $BARE http://127.0.0.1:$FLOOR_PORT /grpc.health.v1.Health/Check health"
  "health $PLAIN http://127.0.0.1:$PORT /grpc.health.v1.Health/Check health"
  "grant $PLAIN http://127.0.0.1:$PORT /permitd.v1.Permits/AcquirePermit grant"
  "rls $PLAIN http://127.0.0.1:$PORT /envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit rls"
  "tls_bare_health $BARE_TLS https://127.0.0.1:$((FLOOR_PORT+1)) /grpc.health.v1.Health/Check health"
  "tls_health $TLSD https://127.0.0.1:$((PORT+1)) /grpc.health.v1.Health/Check health auth"
  "tls_grant $TLSD https://127.0.0.1:$((PORT+1)) /permitd.v1.Permits/AcquirePermit grant auth"
  "tls_rls $TLSD https://127.0.0.1:$((PORT+1)) /envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit rls auth"
)
hdrs() { # auth?
  local h=(-H 'content-type: application/grpc' -H 'te: trailers')
  [[ ${1:-} == auth ]] && h+=(-H "authorization: Bearer $TOKEN")
  printf '%s\n' "${h[@]}"
}
cpu_ns() { # pid: on-CPU nanoseconds of all its threads
  local t=0 s
  for s in /proc/"$1"/task/*/schedstat; do t=$((t + $(cut -d' ' -f1 "$s"))); done
  echo "$t"
}

# Each request must answer grpc-status 0 (h2load counts HTTP 200s only).
for row in "${ROWS[@]}"; do
  read -r name pid url path body auth <<<"$row"
  mapfile -t h < <(hdrs "$auth")
  nghttp -v "${h[@]}" -d "$W/$body" "$url$path" 2>&1 | grep -q 'grpc-status: 0' \
    || { echo "$name: the request did not answer grpc-status 0" >&2; exit 1; }
done

for r in $(seq "$ROUNDS"); do
  for row in "${ROWS[@]}"; do
    read -r name pid url path body auth <<<"$row"
    mapfile -t h < <(hdrs "$auth")
    c0=$(cpu_ns "$pid")
    line=$(taskset -c 1 h2load -n "$REQUESTS" -c 4 -m 16 "${h[@]}" -d "$W/$body" "$url$path" 2>&1 \
      | grep -E 'finished in|succeeded' | tr '\n' ' ')
    # A granted permit holds its lease (the bench resource's: 5 s) until the sweeper
    # (every 1 s) reclaims it: wait for that, so the reclaim is charged to the grants and
    # does not run beside the next row.
    [[ $body == grant ]] && sleep 6.5
    c1=$(cpu_ns "$pid")
    echo "$r $name $((c1 - c0)) $line" >> "$W/raw"
  done
done

python3 - "$W/raw" "$REQUESTS" "$ROUNDS" <<'PY' > "$W/table"
import re, statistics, sys
raw, n, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = {}
for line in open(raw):
    _, name, cpu, rest = line.split(" ", 3)
    rps = float(re.search(r"([\d.]+) req/s", rest).group(1))
    ok = int(re.search(r"(\d+) succeeded", rest).group(1))
    rows.setdefault(name, []).append((rps, int(cpu) / 1000 / n, ok))
print(f"h2load -c 4 -m 16 (concurrency 64), {n} requests x {rounds} rounds, medians; server on core 0, h2load on core 1")
print(f"{'call':16} {'req/s':>8} {'cpu_us/req':>10} {'x_bare':>7} {'cpu_x_bare':>10} {'failed':>7}")
for name, vals in rows.items():
    rps = statistics.median(v[0] for v in vals)
    cpu = statistics.median(v[1] for v in vals)
    failed = sum(n - v[2] for v in vals)
    base = rows["tls_bare_health" if name.startswith("tls_") else "bare_health"]
    brps = statistics.median(v[0] for v in base)
    bcpu = statistics.median(v[1] for v in base)
    print(f"{name:16} {rps:>8.0f} {cpu:>10.2f} {rps / brps:>7.2f} {cpu / bcpu:>10.2f} {failed:>7}")
PY
cat "$W/table" > "$OUT"
