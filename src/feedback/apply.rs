//! How an observation changes a bucket: cooldowns, learned limits, corrections.
//!
//! Rules (headers.md, "What a report teaches permitd"):
//! - a cooldown status (429, 503, or 403 with a remaining of 0) pauses the bucket for
//!   everyone until the delay the caller computed (Retry-After, the reset, or the backoff
//!   policy); this holds even when the resource does not learn from headers;
//! - with `learn_from_headers`: a limit becomes the dimension's learned limit (it can only
//!   make the resource stricter: every limit must have room; its window is the upstream's,
//!   else the configured limit's on that dimension, else the dialect's usual one), a
//!   remaining lower than permitd's count corrects the bucket down, and a remaining of 0
//!   with a reset grants nothing of that dimension until the reset. An exhausted dimension the resource does
//!   not know pauses the whole bucket, since every call may use it.
//!
//! Pure: the bucket is passed in locked, `now` is given.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Observation;
use crate::clock::{Nanos, nanos};
use crate::permits::bucket::BucketState;
use crate::permits::limit::{MAX_AMOUNT, MAX_PERIOD_NS, MIN_PERIOD_NS, Rate};
use crate::permits::resource::ResourceDef;

/// Window assumed for a limit whose upstream does not say (OpenAI, Anthropic and most
/// X-RateLimit users publish per-minute quotas).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Window assumed for GitHub, whose primary limits are per hour.
pub const GITHUB_WINDOW: Duration = Duration::from_secs(3600);

/// One thing a report taught permitd, for the answer's `learned` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The dimension.
    pub dimension: String,
    /// The upstream's limit, when it said.
    pub limit: Option<u64>,
    /// Units left, when it said.
    pub remaining: Option<u64>,
    /// When the quota resets (monotonic), when it said.
    pub reset_at: Option<Nanos>,
    /// The header it came from.
    pub source: String,
}

/// What applying an observation did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The cooldown now in force, if any (this report's or an earlier one's).
    pub cooldown_until: Option<Nanos>,
    /// Whether this report imposed a cooldown.
    pub imposed: bool,
    /// What was learned (empty when the resource does not learn).
    pub learned: Vec<Learned>,
    /// Learned limits that changed the bucket.
    pub limits_changed: usize,
    /// Dimensions the resource does not know (ignored unless exhausted).
    pub unknown_dimensions: usize,
}

/// Whether a status pauses the resource for everyone.
#[must_use]
pub fn is_cooldown_status(status: u32, remaining_zero: bool) -> bool {
    matches!(status, 429 | 503) || (status == 403 && remaining_zero)
}

/// What a report may change in a bucket: the embedded engine's [`BucketState`], or the
/// cluster engine's list of effects that one Redis script applies atomically.
pub trait Target {
    /// Count an upstream 429.
    fn count_429(&mut self);
    /// Pause everything until `until` (never shortens a cooldown in force).
    fn cool_down(&mut self, until: Nanos);
    /// Set the learned limit of `dimension` for `rate`'s window; true when it changed.
    fn learn(&mut self, dimension: usize, rate: Rate) -> bool;
    /// Lower `dimension`'s limits (of `window_ns`, or all) to `remaining` if above.
    fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        now: Nanos,
    );
    /// Grant nothing of `dimension` until `until`.
    fn block_dimension(&mut self, dimension: usize, until: Nanos);
    /// The cooldown in force (0: none).
    fn cooldown_until(&self) -> Nanos;
}

impl Target for BucketState {
    fn count_429(&mut self) {
        BucketState::count_429(self);
    }
    fn cool_down(&mut self, until: Nanos) {
        BucketState::cool_down(self, until);
    }
    fn learn(&mut self, dimension: usize, rate: Rate) -> bool {
        BucketState::learn(self, dimension, rate)
    }
    fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        now: Nanos,
    ) {
        BucketState::correct_down(self, dimension, window_ns, remaining, now);
    }
    fn block_dimension(&mut self, dimension: usize, until: Nanos) {
        BucketState::block_dimension(self, dimension, until);
    }
    fn cooldown_until(&self) -> Nanos {
        BucketState::cooldown_until(self)
    }
}

/// Apply `obs` to the bucket; `cooldown` is the pause to impose (already decided by the
/// caller from the status, Retry-After and policy), if any.
pub fn apply(
    def: &ResourceDef,
    bucket: &mut (impl Target + ?Sized),
    obs: &Observation,
    status: u32,
    cooldown: Option<Duration>,
    now: Nanos,
) -> Applied {
    let mut out = Applied::default();
    if status == 429 {
        bucket.count_429();
    }
    if let Some(c) = cooldown {
        out.imposed = true;
        bucket.cool_down(now.saturating_add(nanos(c)));
    }
    if def.learn_from_headers {
        let default_window = if obs.upstream_resource.is_some() {
            GITHUB_WINDOW
        } else {
            DEFAULT_WINDOW
        };
        for d in &obs.dimensions {
            let reset_at = d.reset_after.map(|r| now.saturating_add(nanos(r)));
            let Some(i) = def.dimension_index(&d.dimension) else {
                out.unknown_dimensions += 1;
                if let (Some(0), Some(at)) = (d.remaining, reset_at) {
                    bucket.cool_down(at);
                }
                continue;
            };
            if let Some(limit) = d.limit.filter(|&l| (1..=MAX_AMOUNT).contains(&l)) {
                // The window: as the upstream says; else the configured limit's on the same
                // dimension (the operator knows it); else the dialect's usual one.
                let configured = def
                    .limits
                    .iter()
                    .filter(|l| l.dimension == i)
                    .map(|l| l.rate.period_ns)
                    .min();
                let period_ns = d
                    .window
                    .map(nanos)
                    .or(configured)
                    .unwrap_or_else(|| nanos(default_window))
                    .clamp(MIN_PERIOD_NS, MAX_PERIOD_NS);
                let rate = Rate {
                    amount: limit,
                    period_ns,
                    burst: limit,
                };
                if bucket.learn(i, rate) {
                    out.limits_changed += 1;
                }
            }
            if let Some(r) = d.remaining {
                bucket.correct_down(i, d.window.map(nanos), r, now);
                if let (0, Some(at)) = (r, reset_at) {
                    bucket.block_dimension(i, at);
                }
            }
            out.learned.push(Learned {
                dimension: d.dimension.clone(),
                limit: d.limit,
                remaining: d.remaining,
                reset_at,
                source: d.source.clone(),
            });
        }
    }
    let until = bucket.cooldown_until();
    out.cooldown_until = (until > now).then_some(until);
    out
}

/// What header feedback did since start, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reports received.
    pub reports: AtomicU64,
    /// Dimension observations learned from.
    pub learned: AtomicU64,
    /// Rate-limit headers that could not be parsed.
    pub ignored_headers: AtomicU64,
    /// Reports that imposed a cooldown.
    pub cooldowns: AtomicU64,
    /// Upstream 429s reported.
    pub upstream_429: AtomicU64,
}

impl Counters {
    /// Count one report.
    pub fn record(&self, obs: &Observation, applied: &Applied, status: u32) {
        let add = |c: &AtomicU64, n: usize| {
            c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        };
        add(&self.reports, 1);
        add(&self.learned, applied.learned.len());
        add(&self.ignored_headers, obs.ignored.len());
        add(&self.cooldowns, usize::from(applied.imposed));
        add(&self.upstream_429, usize::from(status == 429));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::DimensionObs;
    use crate::permits::bucket::Block;
    use crate::permits::resource::{BackoffDef, LimitDef, Origin, REQUESTS, Scope};

    const SEC: u64 = 1_000_000_000;

    fn def(learn: bool, requests_per_sec: Option<u64>) -> ResourceDef {
        ResourceDef {
            name: "r".into(),
            dimensions: vec![REQUESTS.into(), "tokens".into()],
            declared_dimensions: vec!["tokens".into()],
            limits: requests_per_sec
                .map(|n| LimitDef {
                    dimension: 0,
                    rate: Rate {
                        amount: n,
                        period_ns: SEC,
                        burst: n,
                    },
                    scope: Scope::Resource,
                    scope_explicit: false,
                    origin: Origin::Config,
                })
                .into_iter()
                .collect(),
            concurrency: 0,
            lease: Duration::from_secs(60),
            per_partition: false,
            backoff: BackoffDef::default(),
            max_queue: 10,
            learn_from_headers: learn,
        }
    }

    fn obs(dims: Vec<DimensionObs>) -> Observation {
        Observation {
            retry_after: None,
            dimensions: dims,
            upstream_resource: None,
            ignored: vec![],
        }
    }

    fn dim(
        name: &str,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset_s: Option<u64>,
    ) -> DimensionObs {
        DimensionObs {
            dimension: name.into(),
            limit,
            remaining,
            reset_after: reset_s.map(Duration::from_secs),
            window: None,
            source: format!("x-test-{name}"),
        }
    }

    /// A cooldown status pauses the whole bucket until the given delay, learning or not.
    #[test]
    fn cooldown_pauses_the_bucket() {
        let d = def(false, Some(10));
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let a = apply(
            &d,
            &mut b,
            &obs(vec![]),
            429,
            Some(Duration::from_secs(2)),
            5 * SEC,
        );
        assert_eq!(a.cooldown_until, Some(7 * SEC));
        assert_eq!(b.upstream_429_total(), 1);
        assert_eq!(
            b.check(None, &[1, 0], 6 * SEC),
            Err(Block::Cooldown { wait: SEC })
        );
        assert_eq!(b.check(None, &[1, 0], 7 * SEC), Ok(()));
        assert!(a.learned.is_empty());
        assert!(is_cooldown_status(503, false) && is_cooldown_status(403, true));
        assert!(!is_cooldown_status(403, false) && !is_cooldown_status(500, false));
    }

    /// A learned limit takes the configured limit's window and can only make the resource
    /// stricter; remaining corrects the bucket down.
    #[test]
    fn learned_limit_only_restricts() {
        let d = def(true, Some(10));
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let a = apply(
            &d,
            &mut b,
            &obs(vec![dim("requests", Some(100), Some(4), None)]),
            200,
            None,
            0,
        );
        assert_eq!(a.learned.len(), 1);
        assert_eq!(a.limits_changed, 1);
        // Config 10/s still binds (not raised to 100), and the upstream's 4 left win.
        let left = b.limits.iter().map(|l| l.state.available(0)).min();
        assert_eq!(left, Some(4));
        let learned = b
            .limits
            .iter()
            .find(|l| l.origin == Origin::Learned)
            .unwrap();
        assert_eq!(
            learned.state.rate().period_ns,
            SEC,
            "window from the configured limit"
        );
        // The same report again changes nothing.
        let a = apply(
            &d,
            &mut b,
            &obs(vec![dim("requests", Some(100), Some(4), None)]),
            200,
            None,
            0,
        );
        assert_eq!(a.limits_changed, 0);
    }

    /// Remaining 0 with a reset blocks that dimension until the reset; an exhausted
    /// dimension the resource does not know pauses everything.
    #[test]
    fn exhausted_dimensions_block() {
        let d = def(true, None);
        let mut b = BucketState::new(&d, Scope::Resource, true);
        apply(
            &d,
            &mut b,
            &obs(vec![dim("tokens", None, Some(0), Some(3))]),
            200,
            None,
            0,
        );
        assert_eq!(
            b.check(None, &[1, 0], SEC),
            Ok(()),
            "requests are not blocked"
        );
        assert_eq!(
            b.check(None, &[1, 5], SEC),
            Err(Block::Rate { wait: 2 * SEC })
        );
        let a = apply(
            &d,
            &mut b,
            &obs(vec![dim("images", None, Some(0), Some(9))]),
            200,
            None,
            0,
        );
        assert_eq!(a.unknown_dimensions, 1);
        assert_eq!(a.cooldown_until, Some(9 * SEC));
    }

    /// With learn_from_headers off, headers teach nothing.
    #[test]
    fn learning_off() {
        let d = def(false, None);
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let a = apply(
            &d,
            &mut b,
            &obs(vec![dim("requests", Some(1), Some(0), Some(60))]),
            200,
            None,
            0,
        );
        assert!(a.learned.is_empty() && b.limits.is_empty());
        assert_eq!(b.check(None, &[1, 0], 0), Ok(()));
    }
}
