#!/usr/bin/env bash
# Soak (not in CI): insert/expire churn with short TTLs (1-3 s) against the real permitd
# binary for SECS seconds (default 3600), printing the server's RSS and data-directory size
# every SAMPLE seconds (default 60), then a `RESULT soak ...` line comparing the first and
# second halves' peaks: memory and disk should level off once expiry keeps pace.
#
#   SECS=14400 SAMPLE=300 CLIENTS=8 ./scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export PERMITD_SOAK_SECS="${SECS:-3600}"
export PERMITD_SOAK_SAMPLE_SECS="${SAMPLE:-60}"
export PERMITD_SOAK_CLIENTS="${CLIENTS:-8}"
cargo test --locked --release --test it soak:: -- --ignored --nocapture --test-threads=1 2>&1 \
  | grep -E '^(SOAK|RESULT|test |thread )|panicked'
