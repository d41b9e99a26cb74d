//! OpenAI `x-ratelimit-{limit,remaining,reset}-{kind}` with Go-style durations.
#![no_main]

#[path = "common.rs"]
mod common;

const NAMES: &[&str] = &[
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-reset-input-tokens",
    "x-ratelimit-remaining-output-tokens",
];

libfuzzer_sys::fuzz_target!(|input: common::Input| {
    common::run(NAMES, &input);
});
