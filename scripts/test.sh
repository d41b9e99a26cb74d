#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# The Rust toolchain is the machine's; crates come from crates.io through Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests drive, from Debian: headless Chromium (the dashboard test), redis-server
# and redis-cli (the Redis and Redis Cluster tests start their own servers; none is started
# here), openssl (the throwaway CA of the rediss:// tests), faketime (the clock-skew
# test), curl (Connect over mTLS) and Node.js with npm (the TypeScript client). Install whatever is missing when we can (root, with apt-get); without them those
# tests print a skip notice, or fail under CI=true.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# Unit tests (bucket math with proptest, parsers, store conformance on memory, sled and Redis)
# and the integration tests (real server on 127.0.0.1:0, real clients, real sled on disk, the
# dashboard in headless Chromium).
# The bench's bare floor server, which bench_cli runs (`cargo test` builds examples only as
# test harnesses).
cargo build --locked --example floor
cargo test --locked --all-targets "$@"
# The bounded coordination matrix and the cluster's utilisation measure timing: on their
# own, so nothing else competes for the two cores while their fleets pace their calls.
cargo test --locked --test it coord::coord_matrix_meets_targets -- --ignored --exact
cargo test --locked --test it cluster::redis_cluster_utilisation -- --ignored --exact

# Bounded fuzzing of every parser target (cargo-fuzz, libFuzzer): FUZZ_SECONDS per target.
./scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

# The Python client's tests (a venv with grpcio, pytest) against the binary just built.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
PERMITD_BIN="$target_dir/debug/permitd" ./clients/python/scripts/test.sh

# The TypeScript client's tests (npm ci from the committed lockfile, then node --test over
# gRPC and Connect) against the same binary; under CI=true a missing Node >= 20 fails.
PERMITD_BIN="$target_dir/debug/permitd" ./clients/typescript/scripts/test.sh
