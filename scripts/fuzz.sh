#!/usr/bin/env bash
# Fuzz the parsers of untrusted input (headers, backoff, certificate names, the config file,
# what a store reads back) for a bounded time per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 s, every target in fuzz/)
#
# Prints one line per target: `RESULT fuzz target=T seconds=S runs=N crashes=C`, and exits
# non-zero if any target crashed (the input is kept in fuzz/artifacts/T/ and the log in
# fuzz/artifacts/T.log; replay with `cargo fuzz run T fuzz/artifacts/T/crash-...`).
#
# scripts/test.sh runs it bounded (FUZZ_SECONDS per target). cargo-fuzz builds with
# nightly-only flags (-Zsanitizer=address, coverage instrumentation): on this stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them; set FUZZ_TOOLCHAIN=nightly to use a nightly.
# Seed inputs, where a target has them, are in fuzz/seeds/TARGET (committed); what the
# fuzzer finds goes to fuzz/corpus/TARGET (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

cargo_fuzz=(cargo fuzz)
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    cargo_fuzz=(cargo "+${FUZZ_TOOLCHAIN}" fuzz)
else
    export RUSTC_BOOTSTRAP=1
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo_fuzz[@]}" list)
fi

# One build of every target first, so the time budget below is all fuzzing.
"${cargo_fuzz[@]}" build

failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    corpora=("fuzz/corpus/$t")
    [[ -d "fuzz/seeds/$t" ]] && corpora+=("fuzz/seeds/$t")
    log="fuzz/artifacts/$t.log"
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    # -max_len above the parser's 4 KiB value cap so over-size values are tried too;
    # -timeout turns any slow (super-linear) input into a reported failure.
    if "${cargo_fuzz[@]}" run "$t" "${corpora[@]}" -- \
        -max_total_time="$secs" -max_len=16384 -timeout=10 \
        -dict=fuzz/headers.dict -print_final_stats=1 >"$log" 2>&1; then
        status=0
    else
        status=$?
    fi
    after=$(find "fuzz/artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [[ $status -ne 0 && $crashes -eq 0 ]]; then
        crashes=1 # failed without an artifact (e.g. a build or OOM problem): see the log
    fi
    runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)
    echo "RESULT fuzz target=$t seconds=$secs runs=${runs:-0} crashes=$crashes"
    [[ $crashes -eq 0 ]] || failed=1
done
exit "$failed"
