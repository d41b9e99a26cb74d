//! Anthropic `anthropic-ratelimit-{kind}-{limit,remaining,reset}` with RFC 3339 resets.
#![no_main]

#[path = "common.rs"]
mod common;

const NAMES: &[&str] = &[
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "retry-after",
];

libfuzzer_sys::fuzz_target!(|input: common::Input| {
    common::run(NAMES, &input);
});
