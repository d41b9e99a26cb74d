//! Classic `X-RateLimit-*` (GitHub included) and the older `RateLimit-*` drafts.
#![no_main]

#[path = "common.rs"]
mod common;

const NAMES: &[&str] = &[
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

libfuzzer_sys::fuzz_target!(|input: common::Input| {
    common::run(NAMES, &input);
});
