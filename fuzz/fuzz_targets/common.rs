//! Shared by the parser targets: fuzzer bytes -> headers of one dialect (names from the
//! dialect's list in random case, arbitrary values, an arbitrary `now`), then the
//! observation's invariants, so the fuzzer hunts wrong answers as well as panics.

#![allow(dead_code)] // each target uses part of it

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use permitd::feedback::{self, MAX_DIMENSIONS, MAX_HORIZON, Observation};

/// One fuzz case: headers as (name index, case mask, value) and `now` in seconds.
#[derive(Arbitrary, Debug)]
pub struct Input {
    headers: Vec<(u8, u64, String)>,
    now: u64,
}

/// `name` with the letters whose bit is set in `mask` upper-cased.
fn case_mix(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (mask >> (i % 64)) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Parse the case's headers, named from `names`, and check the result.
pub fn run(names: &[&str], input: &Input) {
    // Up to year ~2255: beyond what httpdate and humantime represent, below SystemTime's edge.
    let now = UNIX_EPOCH + Duration::from_secs(input.now % 9_000_000_000);
    let headers: Vec<(String, &str)> = input
        .headers
        .iter()
        .map(|(i, mask, v)| {
            let name = names[usize::from(*i) % names.len()];
            (case_mix(name, *mask), v.as_str())
        })
        .collect();
    let obs = feedback::parse(headers.iter().map(|(n, v)| (n.as_str(), *v)), now);
    check(&obs);
}

/// Invariants of every observation.
pub fn check(o: &Observation) {
    assert!(o.retry_after.is_none_or(|d| d <= MAX_HORIZON));
    assert!(o.dimensions.len() <= MAX_DIMENSIONS);
    for d in &o.dimensions {
        assert_ne!(d.limit, Some(0));
        assert!(d.reset_after.is_none_or(|r| r <= MAX_HORIZON));
        assert!(d.window.is_none_or(|w| !w.is_zero() && w <= MAX_HORIZON));
        assert!(!d.source.is_empty() && d.source == d.source.to_ascii_lowercase());
        assert!(!d.dimension.is_empty());
    }
    for (name, why) in &o.ignored {
        assert!(*name == name.to_ascii_lowercase() && !why.is_empty());
    }
}
