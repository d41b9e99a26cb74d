#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# The Rust toolchain is the machine's; crates come from crates.io through Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

# The dashboard test drives Debian's headless Chromium. Install it when it is missing and we
# can (root, with apt-get); without it that test prints a skip notice, or fails under CI=true.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# Unit tests (bucket math with proptest, parsers, store conformance on memory and sled)
# and the integration tests (real server on 127.0.0.1:0, real clients, real sled on disk, the
# dashboard in headless Chromium).
cargo test --locked --all-targets "$@"

# The Python client's tests (a venv with grpcio, pytest) against the binary just built.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
PERMITD_BIN="$target_dir/debug/permitd" ./clients/python/scripts/test.sh
