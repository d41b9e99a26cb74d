//! Fully arbitrary header names and values (every dialect at once, and none).
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::{Duration, UNIX_EPOCH};

libfuzzer_sys::fuzz_target!(|input: (Vec<(String, String)>, u64)| {
    let (headers, now) = input;
    let now = UNIX_EPOCH + Duration::from_secs(now % 9_000_000_000);
    let obs = permitd::feedback::parse(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), now);
    common::check(&obs);
});
