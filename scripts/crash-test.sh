#!/usr/bin/env bash
# The long crash test: the real permitd binary under write load from several clients,
# killed with SIGKILL at random moments and restarted on the same data directory, for
# CYCLES cycles (default 50). Every acknowledged Complete and Cache.Put must survive:
# the last line is `RESULT crash_test cycles=... acknowledged=... lost=0 corrupt=0
# failed_reopens=0 recovery_ms_p50=... max=...`. The default test suite runs 3 cycles.
#
#   CYCLES=200 CLIENTS=16 LOAD_MS=800 ./scripts/crash-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export PERMITD_CRASH_CYCLES="${CYCLES:-50}"
export PERMITD_CRASH_CLIENTS="${CLIENTS:-8}"
export PERMITD_CRASH_LOAD_MS="${LOAD_MS:-500}"
cargo test --locked --release --test it crash:: -- --nocapture --test-threads=1 2>&1 \
  | grep -E "^(RESULT|LOST|CORRUPT|REOPEN|test |thread )|panicked" | tail -n 60
