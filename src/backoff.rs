//! Retry backoff: the delay before retry number `attempt` under a resource's
//! [`BackoffDef`], and the full retry advice for an upstream answer ([`advise`]).
//!
//! Pure and deterministic given the random source: the caller passes a [`fastrand::Rng`], so
//! the server can use a per-call generator and the tests a seeded one. No clock, no state.
//!
//! The four formulas (AWS Architecture Blog, "Exponential Backoff And Jitter"), with
//! `exp(n) = min(max, base * multiplier^(n-1))`:
//! - `Exponential`: `exp(n)`;
//! - `FullJitter`: uniform in `[0, exp(n)]`;
//! - `EqualJitter`: `exp(n)/2` plus uniform in `[0, exp(n)/2]`;
//! - `DecorrelatedJitter`: uniform in `[base, min(max, 3 * prev)]`. The classic form is
//!   stateful (`prev` is the previous sleep); permitd answers each call alone (a worker may
//!   ask another replica, or restart), so `prev` is derived from the attempt instead: it is
//!   `exp(n-1)`, the delay the exponential schedule would have slept last time (and `base`
//!   for the first retry). The spread stays that of the classic form (up to three times the
//!   previous delay) and the growth follows the policy's multiplier.
//!
//! Every result lies in `[0, max]` (decorrelated: `[min(base, max), max]`) for any attempt
//! (0 is read as 1), any multiplier (NaN or below 1 is read as 1) and any durations; the
//! arithmetic is in `f64` seconds with checked conversion back, so nothing overflows or
//! panics. Delays are capped at `max` and, through the nanosecond range of a `u64`, at
//! about 584 years, so never infinite.

use std::time::Duration;

use crate::permits::resource::{BackoffDef, BackoffKind};

/// Shortest delay [`advise`] gives on a 429, so a 429 never means "retry now".
pub const MIN_DELAY_ON_429: Duration = Duration::from_millis(1);

/// What to do after an upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// Whether to retry the request.
    pub retry: bool,
    /// How long to wait before retrying (zero when not retrying).
    pub retry_after: Duration,
    /// The attempts are exhausted: the caller should stop and report failure.
    pub give_up: bool,
}

/// Status codes worth retrying.
///
/// A small sorted set: a handful of codes, so a binary search beats hashing and the set is
/// cheap to clone into every resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retryable {
    codes: Vec<u32>,
}

impl Retryable {
    /// The default set: 0 (no answer: timeout, connection reset), 429, 502, 503, 504. Other
    /// 4xx are the caller's mistake and would fail again; 500 may have had side effects.
    #[must_use]
    pub fn default_set() -> Self {
        Self::new([0, 429, 502, 503, 504])
    }

    /// A set of the given codes (duplicates and order don't matter).
    pub fn new(codes: impl IntoIterator<Item = u32>) -> Self {
        let mut codes: Vec<u32> = codes.into_iter().collect();
        codes.sort_unstable();
        codes.dedup();
        Self { codes }
    }

    /// Whether `status` is in the set.
    #[must_use]
    pub fn contains(&self, status: u32) -> bool {
        self.codes.binary_search(&status).is_ok()
    }
}

impl Default for Retryable {
    fn default() -> Self {
        Self::default_set()
    }
}

/// The policy's delay before retry number `attempt` (attempt 1 = first try failed). Always
/// within `[0, policy.max]` (for decorrelated jitter within `[base, max]`); never panics for
/// any attempt incl. 0 and `u32::MAX`, any multiplier in `[1, 100]`.
pub fn delay(policy: &BackoffDef, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let attempt = attempt.max(1);
    match policy.kind {
        BackoffKind::Exponential => exponential(policy, attempt),
        BackoffKind::FullJitter => uniform(Duration::ZERO, exponential(policy, attempt), rng),
        BackoffKind::EqualJitter => {
            let e = exponential(policy, attempt);
            let half = e / 2;
            // `e - half`, not `half`: an odd number of nanoseconds still reaches `e`.
            half + uniform(Duration::ZERO, e.saturating_sub(half), rng)
        }
        BackoffKind::DecorrelatedJitter => {
            let lo = policy.base.min(policy.max);
            let prev = if attempt == 1 {
                lo
            } else {
                exponential(policy, attempt - 1)
            };
            let hi = prev.saturating_mul(3).min(policy.max).max(lo);
            uniform(lo, hi, rng)
        }
    }
}

/// Full advice: not retryable status (e.g. 400, 404; 2xx) -> retry false, give_up false,
/// retry_after 0; attempt >= max_attempts -> retry false, give_up true; else retry true with
/// retry_after = upstream Retry-After (capped at policy.max_retry_after; a Retry-After of 0
/// on a 429 is raised to at least policy.base so a 429 never yields a zero delay) when
/// given, else delay(...). A 403 counts as retryable only when `remaining_zero` is true
/// (GitHub primary/secondary limits).
///
/// On a 429 the computed delay is also at least [`MIN_DELAY_ON_429`] (full jitter can draw
/// zero), which wins over a `max` of zero. Attempt 0 (unknown) is read as 1.
pub fn advise(
    policy: &BackoffDef,
    retryable: &Retryable,
    attempt: u32,
    status: u32,
    upstream_retry_after: Option<Duration>,
    remaining_zero: bool,
    rng: &mut fastrand::Rng,
) -> Advice {
    let worth_retrying = retryable.contains(status) || (status == 403 && remaining_zero);
    if !worth_retrying {
        return Advice {
            retry: false,
            retry_after: Duration::ZERO,
            give_up: false,
        };
    }
    if attempt.max(1) >= policy.max_attempts {
        return Advice {
            retry: false,
            retry_after: Duration::ZERO,
            give_up: true,
        };
    }
    let wait = match upstream_retry_after {
        // The upstream knows when it will answer again: it wins over any formula.
        Some(ra) => {
            let capped = ra.min(policy.max_retry_after);
            if status == 429 && capped.is_zero() {
                policy.base
            } else {
                capped
            }
        }
        None => delay(policy, attempt, rng),
    };
    let wait = if status == 429 {
        wait.max(MIN_DELAY_ON_429)
    } else {
        wait
    };
    Advice {
        retry: true,
        retry_after: wait,
        give_up: false,
    }
}

/// `min(max, base * multiplier^(attempt-1))`, for `attempt >= 1`.
fn exponential(policy: &BackoffDef, attempt: u32) -> Duration {
    let base = policy.base.min(policy.max);
    let steps = attempt.saturating_sub(1);
    if steps == 0 || base.is_zero() {
        // Exact, and avoids 0 * inf = NaN below.
        return base;
    }
    let m = if policy.multiplier >= 1.0 {
        policy.multiplier
    } else {
        // NaN and values below 1 (never accepted by config validation) would shrink or
        // poison the delay; 1 keeps it constant.
        1.0
    };
    // powi saturates to +inf for large exponents; i32::MAX steps is inf already for m > 1.
    let factor = m.powi(i32::try_from(steps).unwrap_or(i32::MAX));
    // try_from refuses inf, NaN and values past Duration::MAX: all of them mean "the cap".
    Duration::try_from_secs_f64(base.as_secs_f64() * factor)
        .map_or(policy.max, |d| d.min(policy.max))
}

/// Uniform in `[lo, hi]` (nanosecond resolution); `lo` when the range is empty.
fn uniform(lo: Duration, hi: Duration, rng: &mut fastrand::Rng) -> Duration {
    // Durations beyond u64 nanoseconds (584 years) saturate: still within [lo, hi] unless
    // lo itself is beyond, which returns lo.
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (l, h) = (nanos(lo), nanos(hi));
    if l >= h {
        return lo;
    }
    Duration::from_nanos(rng.u64(l..=h))
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
