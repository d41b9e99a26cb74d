//! `backoff::delay` and `backoff::advise` on arbitrary (also absurd) policies and answers.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use permitd::backoff::{self, MIN_DELAY_ON_429, Retryable};
use permitd::permits::resource::{BackoffDef, BackoffKind};

#[derive(Arbitrary, Debug)]
struct Input {
    kind: u8,
    base: (u64, u32),
    max: (u64, u32),
    multiplier: f64,
    max_attempts: u32,
    max_retry_after: (u64, u32),
    attempt: u32,
    status: u32,
    retry_after: Option<(u64, u32)>,
    remaining_zero: bool,
    codes: Option<Vec<u32>>,
    seed: u64,
}

fn dur((secs, nanos): (u64, u32)) -> Duration {
    Duration::new(secs, nanos % 1_000_000_000)
}

libfuzzer_sys::fuzz_target!(|i: Input| {
    let kind = match i.kind % 4 {
        0 => BackoffKind::Exponential,
        1 => BackoffKind::FullJitter,
        2 => BackoffKind::EqualJitter,
        _ => BackoffKind::DecorrelatedJitter,
    };
    let p = BackoffDef {
        kind,
        base: dur(i.base),
        max: dur(i.max),
        multiplier: i.multiplier,
        max_attempts: i.max_attempts,
        max_retry_after: dur(i.max_retry_after),
    };
    let mut rng = fastrand::Rng::with_seed(i.seed);
    let d = backoff::delay(&p, i.attempt, &mut rng);
    assert!(d <= p.max);
    if kind == BackoffKind::DecorrelatedJitter && p.base <= p.max {
        // Within [base, max] unless base is past u64 nanoseconds (584 years).
        assert!(d >= p.base || p.base.as_nanos() > u128::from(u64::MAX));
    }
    let set = i.codes.map_or_else(Retryable::default_set, Retryable::new);
    let ra = i.retry_after.map(dur);
    let a = backoff::advise(
        &p,
        &set,
        i.attempt,
        i.status,
        ra,
        i.remaining_zero,
        &mut rng,
    );
    assert!(!(a.retry && a.give_up));
    if !a.retry {
        assert_eq!(a.retry_after, Duration::ZERO);
    }
    if a.retry && i.status == 429 {
        assert!(a.retry_after >= MIN_DELAY_ON_429);
    }
    if a.retry {
        let ceiling = p
            .max
            .max(p.max_retry_after)
            .max(p.base)
            .max(MIN_DELAY_ON_429);
        assert!(a.retry_after <= ceiling);
    }
});
