#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# The Rust toolchain is the machine's; crates come from crates.io through Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

# Unit tests (bucket math with proptest, parsers, store conformance on memory and sled)
# and the integration tests (real server on 127.0.0.1:0, real clients, real sled on disk).
cargo test --locked --all-targets "$@"
