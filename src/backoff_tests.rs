//! Backoff tests: exact schedules, bounds over 10 000 seeded draws per policy, the advice
//! table, and property tests over arbitrary (also absurd) policies.

use proptest::prelude::*;

use super::*;

const KINDS: [BackoffKind; 4] = [
    BackoffKind::Exponential,
    BackoffKind::FullJitter,
    BackoffKind::EqualJitter,
    BackoffKind::DecorrelatedJitter,
];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(kind: BackoffKind) -> BackoffDef {
    BackoffDef {
        kind,
        ..BackoffDef::default()
    }
}

/// The bounds a draw must respect, from the module's formulas.
fn bounds(p: &BackoffDef, attempt: u32) -> (Duration, Duration) {
    let e = exponential(p, attempt.max(1));
    match p.kind {
        BackoffKind::Exponential => (e, e),
        BackoffKind::FullJitter => (Duration::ZERO, e),
        BackoffKind::EqualJitter => (e / 2, e),
        BackoffKind::DecorrelatedJitter => {
            let lo = p.base.min(p.max);
            let prev = if attempt <= 1 {
                lo
            } else {
                exponential(p, attempt - 1)
            };
            (lo, prev.saturating_mul(3).min(p.max).max(lo))
        }
    }
}

/// The exponential schedule doubles from base and stops at max; attempt 0 reads as 1.
#[test]
fn exponential_schedule() {
    let p = policy(BackoffKind::Exponential);
    let mut rng = fastrand::Rng::with_seed(1);
    let table = [
        (0, ms(500)),
        (1, ms(500)),
        (2, ms(1000)),
        (3, ms(2000)),
        (7, ms(32_000)),
        (8, ms(60_000)),
        (1000, ms(60_000)),
        (u32::MAX, ms(60_000)),
    ];
    for (attempt, want) in table {
        assert_eq!(delay(&p, attempt, &mut rng), want, "attempt {attempt}");
    }
    let p = BackoffDef {
        multiplier: 1.5,
        base: ms(100),
        ..p
    };
    assert_eq!(delay(&p, 3, &mut rng), ms(225));
}

/// 10 000 seeded draws per policy, over attempts 0..=40 and u32::MAX, stay within bounds.
#[test]
fn ten_thousand_draws_per_policy_within_bounds() {
    for kind in KINDS {
        let p = policy(kind);
        let mut rng = fastrand::Rng::with_seed(42);
        for i in 0..10_000u32 {
            let attempt = if i % 41 == 40 { u32::MAX } else { i % 41 };
            let d = delay(&p, attempt, &mut rng);
            let (lo, hi) = bounds(&p, attempt);
            assert!(lo <= d && d <= hi, "{kind:?} attempt {attempt}: {d:?}");
            assert!(d <= p.max);
        }
    }
}

/// Jitter spreads: full jitter covers its whole range with the expected mean, equal jitter
/// its upper half, decorrelated jitter [base, 3 * base] on the first retry.
#[test]
fn jitter_spreads() {
    let mut rng = fastrand::Rng::with_seed(7);
    let draws = |kind, attempt, rng: &mut fastrand::Rng| -> Vec<f64> {
        (0..10_000)
            .map(|_| delay(&policy(kind), attempt, rng).as_secs_f64())
            .collect()
    };
    let stats = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        (min, max, v.iter().sum::<f64>() / 10_000.0)
    };
    // Attempt 3: exp = 2 s.
    let (min, max, mean) = stats(&draws(BackoffKind::FullJitter, 3, &mut rng));
    assert!(
        min < 0.05 && max > 1.95 && (0.95..1.05).contains(&mean),
        "{min} {max} {mean}"
    );
    let (min, max, mean) = stats(&draws(BackoffKind::EqualJitter, 3, &mut rng));
    assert!((1.0..1.05).contains(&min) && max > 1.95 && (1.45..1.55).contains(&mean));
    let (min, max, _) = stats(&draws(BackoffKind::DecorrelatedJitter, 1, &mut rng));
    assert!(
        (0.5..0.55).contains(&min) && max <= 1.5 && max > 1.45,
        "{min} {max}"
    );
}

/// The same seed gives the same delays: the caller's Rng is the only randomness.
#[test]
fn seeded_rng_is_deterministic() {
    let p = policy(BackoffKind::DecorrelatedJitter);
    let run = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (1..20).map(|a| delay(&p, a, &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

/// Degenerate policies: zero base, base above max, zero max, a NaN or sub-1 multiplier.
#[test]
fn degenerate_policies() {
    let mut rng = fastrand::Rng::with_seed(3);
    for kind in KINDS {
        let zero_base = BackoffDef {
            base: Duration::ZERO,
            ..policy(kind)
        };
        assert_eq!(delay(&zero_base, 5, &mut rng), Duration::ZERO, "{kind:?}");
        let base_over_max = BackoffDef {
            base: ms(10_000),
            max: ms(1000),
            ..policy(kind)
        };
        assert!(delay(&base_over_max, 1, &mut rng) <= ms(1000));
        let zero_max = BackoffDef {
            max: Duration::ZERO,
            ..policy(kind)
        };
        assert_eq!(delay(&zero_max, 9, &mut rng), Duration::ZERO);
        for multiplier in [f64::NAN, 0.5, -3.0, f64::INFINITY, f64::MAX] {
            let p = BackoffDef {
                multiplier,
                ..policy(kind)
            };
            for attempt in [0, 1, 2, 50, u32::MAX] {
                let d = delay(&p, attempt, &mut rng);
                assert!(d <= p.max, "{kind:?} {multiplier} {attempt}");
            }
        }
    }
}

/// The advice table of the contract.
#[test]
fn advice_table() {
    let p = policy(BackoffKind::Exponential); // base 500 ms, 6 attempts, RA cap 15 min
    let set = Retryable::default();
    let s = Duration::from_secs;
    let retry = |d| Advice {
        retry: true,
        retry_after: d,
        give_up: false,
    };
    let no = Advice {
        retry: false,
        retry_after: Duration::ZERO,
        give_up: false,
    };
    let give_up = Advice {
        retry: false,
        retry_after: Duration::ZERO,
        give_up: true,
    };
    // (attempt, status, upstream Retry-After, remaining_zero, want)
    let table = [
        (1, 429, None, false, retry(ms(500))),
        (3, 429, None, false, retry(ms(2000))),
        (1, 429, Some(s(12)), false, retry(s(12))),
        (1, 429, Some(s(3600)), false, retry(s(900))),
        (1, 429, Some(Duration::ZERO), false, retry(ms(500))),
        (1, 503, Some(Duration::ZERO), false, retry(Duration::ZERO)),
        (2, 503, None, false, retry(ms(1000))),
        (1, 502, None, false, retry(ms(500))),
        (1, 504, None, false, retry(ms(500))),
        (1, 0, None, false, retry(ms(500))),
        (0, 0, None, false, retry(ms(500))),
        (1, 400, None, false, no),
        (1, 404, Some(s(5)), true, no),
        (1, 200, None, false, no),
        (1, 500, None, false, no),
        (1, 403, None, false, no),
        (1, 403, None, true, retry(ms(500))),
        (1, 403, Some(s(60)), true, retry(s(60))),
        (5, 429, None, false, retry(ms(8000))),
        (6, 429, None, false, give_up),
        (6, 429, Some(s(1)), false, give_up),
        (u32::MAX, 503, None, false, give_up),
        (6, 400, None, false, no),
    ];
    let mut rng = fastrand::Rng::with_seed(5);
    for (attempt, status, ra, rz, want) in table {
        let got = advise(&p, &set, attempt, status, ra, rz, &mut rng);
        assert_eq!(
            got, want,
            "attempt {attempt} status {status} ra {ra:?} rz {rz}"
        );
    }
}

/// A 429 never yields a zero delay, even when the policy's base and max are zero or full
/// jitter draws zero.
#[test]
fn never_zero_on_429() {
    let mut rng = fastrand::Rng::with_seed(11);
    let zero = BackoffDef {
        base: Duration::ZERO,
        max: Duration::ZERO,
        ..policy(BackoffKind::FullJitter)
    };
    let set = Retryable::default();
    for ra in [None, Some(Duration::ZERO), Some(Duration::from_secs(1))] {
        let a = advise(&zero, &set, 1, 429, ra, false, &mut rng);
        assert!(a.retry && a.retry_after >= MIN_DELAY_ON_429, "{ra:?}");
    }
    let p = policy(BackoffKind::FullJitter);
    for _ in 0..10_000 {
        let a = advise(&p, &set, 1, 429, None, false, &mut rng);
        assert!(a.retry_after >= MIN_DELAY_ON_429);
    }
}

/// Retryable sets are configurable; the default is 0, 429, 502, 503, 504.
#[test]
fn retryable_sets() {
    let d = Retryable::default();
    assert_eq!(d, Retryable::default_set());
    for code in [0, 429, 502, 503, 504] {
        assert!(d.contains(code), "{code}");
    }
    for code in [200, 400, 401, 403, 404, 409, 500, 501, u32::MAX] {
        assert!(!d.contains(code), "{code}");
    }
    let custom = Retryable::new([500, 429, 500, 408]);
    assert!(custom.contains(408) && custom.contains(500) && !custom.contains(503));
    let p = policy(BackoffKind::Exponential);
    let mut rng = fastrand::Rng::with_seed(1);
    assert!(advise(&p, &custom, 1, 500, None, false, &mut rng).retry);
    assert!(!advise(&p, &custom, 1, 503, None, false, &mut rng).retry);
    assert!(!advise(&p, &Retryable::new([]), 1, 429, None, false, &mut rng).retry);
}

fn any_kind() -> impl Strategy<Value = BackoffKind> {
    prop_oneof![
        Just(BackoffKind::Exponential),
        Just(BackoffKind::FullJitter),
        Just(BackoffKind::EqualJitter),
        Just(BackoffKind::DecorrelatedJitter),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// For valid policies (multiplier in [1, 100]) every kind's draw stays within its
    /// bounds, for any attempt: 10 000 cases, each drawing all four kinds.
    #[test]
    fn valid_policies_stay_within_bounds(
        base_ms in 0u64..120_000,
        max_ms in 0u64..3_600_000,
        multiplier in 1.0f64..=100.0,
        attempt in prop_oneof![0u32..64, any::<u32>()],
        seed in any::<u64>(),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        for kind in KINDS {
            let p = BackoffDef { kind, base: ms(base_ms), max: ms(max_ms), multiplier, ..BackoffDef::default() };
            let d = delay(&p, attempt, &mut rng);
            let (lo, hi) = bounds(&p, attempt);
            prop_assert!(lo <= d && d <= hi && d <= p.max, "{:?} {:?} not in {:?}..={:?}", kind, d, lo, hi);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Absurd policies (any durations up to u64 seconds, any f64 multiplier) never panic and
    /// never exceed max; advice is never zero on a 429.
    #[test]
    fn absurd_policies_never_panic(
        kind in any_kind(),
        base_s in any::<u64>(),
        max_s in any::<u64>(),
        multiplier in any::<f64>(),
        attempt in any::<u32>(),
        max_attempts in any::<u32>(),
        status in prop_oneof![Just(429u32), Just(403), Just(0), any::<u32>()],
        ra_s in proptest::option::of(any::<u64>()),
        remaining_zero in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let p = BackoffDef {
            kind,
            base: Duration::from_secs(base_s),
            max: Duration::from_secs(max_s),
            multiplier,
            max_attempts,
            max_retry_after: Duration::from_secs(max_s / 2),
        };
        let mut rng = fastrand::Rng::with_seed(seed);
        prop_assert!(delay(&p, attempt, &mut rng) <= p.max);
        let ra = ra_s.map(Duration::from_secs);
        let a = advise(&p, &Retryable::default(), attempt, status, ra, remaining_zero, &mut rng);
        prop_assert!(!(a.retry && a.give_up));
        if a.retry && status == 429 {
            prop_assert!(!a.retry_after.is_zero());
        }
        if !a.retry {
            prop_assert_eq!(a.retry_after, Duration::ZERO);
        }
    }
}
