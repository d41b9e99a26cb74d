//! IETF `RateLimit-Policy` / `RateLimit` structured fields.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|input: common::Input| {
    common::run(&["ratelimit-policy", "ratelimit"], &input);
});
