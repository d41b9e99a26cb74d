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
//!   with a reset grants nothing of that dimension until the reset, unless the quota refills
//!   continuously at the limit this report taught ([`refills_at_rate`]): then only until one
//!   unit is back, and the learned limit, corrected to 0, paces the next grants at that
//!   rate. An exhausted dimension the resource does not know pauses the whole bucket, since
//!   every call may use it.
//!
//! Pure: the bucket is passed in locked, `now` is given.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Observation, Refill};
use crate::clock::{Nanos, nanos};
use crate::permits::bucket::{Basis, BucketState, Fit, Refilled};
use crate::permits::limit::{MAX_AMOUNT, MAX_PERIOD_NS, MIN_PERIOD_NS, Rate};
use crate::permits::resource::{Origin, ResourceDef};

/// Window assumed for a limit whose upstream does not say (OpenAI, Anthropic and most
/// X-RateLimit users publish per-minute quotas).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Window assumed for GitHub, whose primary limits are per hour.
pub const GITHUB_WINDOW: Duration = Duration::from_secs(3600);

/// How far an upstream's reset may be off by rounding: IETF `t` and classic resets are whole
/// seconds, rounded either way.
pub const RESET_ROUNDING: Duration = Duration::from_secs(1);

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
    /// Whether a 429 without rate-limit headers cut the adaptive rate.
    pub adapted: bool,
    /// Whether a pause this report asked for was cut to `max_retry_after`.
    pub capped: bool,
    /// What the report did to a trial of a shorter window, if anything.
    pub pace: Option<Pace>,
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
    /// Set the learned limit of `dimension` for `rate`'s window (`basis`: how the window
    /// was read); true when it changed.
    fn learn(&mut self, dimension: usize, rate: Rate, basis: Basis, now: Nanos) -> bool;
    /// What the answers so far prove about `dimension`'s fitted window.
    fn fit(&self, dimension: usize) -> Option<Fit>;
    /// Keep what the answers prove about `dimension`'s fitted window.
    fn set_fit(&mut self, dimension: usize, fit: Fit);
    /// Drop the configured (guessed) limits of `dimension`; true when there were some.
    fn drop_guess(&mut self, dimension: usize) -> bool;
    /// The upstream taught a limit: slow start and the adaptive rate end.
    fn confirm(&mut self);
    /// What `dimension`'s upstream showed of its refill when probed before a reset.
    fn refilled(&self, dimension: usize) -> Refilled;
    /// Let one probe through at `probe_at`, before the stated reset `reset_at` of
    /// `dimension`.
    fn arm_refill_probe(&mut self, dimension: usize, probe_at: Nanos, reset_at: Nanos);
    /// Judge a pending probe of `dimension` by this answer's status.
    fn observe_refill(&mut self, dimension: usize, status: u32, seq: Option<u64>, now: Nanos);
    /// A call succeeded without teaching a limit (`adapts`: the header-less ramp may run).
    fn succeeded_blind(&mut self, cap: Option<f64>, adapts: bool, now: Nanos);
    /// A 429 without rate-limit headers for permit `seq`: cut the adaptive rate; calls
    /// resume at `resume_at`. True when cut.
    fn limited_blind(
        &mut self,
        seq: Option<u64>,
        cap: Option<f64>,
        now: Nanos,
        resume_at: Nanos,
    ) -> bool;
    /// Lower `dimension`'s limits (of `window_ns`, or all) to `remaining` if above.
    /// `earliest`: the first instant the upstream can have counted (the call's grant).
    /// Returns whether a limit had to change (always, for engines that cannot tell).
    fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        earliest: Nanos,
        now: Nanos,
    ) -> bool;
    /// Grant nothing of `dimension` until `until`.
    fn block_dimension(&mut self, dimension: usize, until: Nanos);
    /// The cooldown in force (0: none).
    fn cooldown_until(&self) -> Nanos;
    /// Say why a pause is in force (the cooldown when `dimension` is `None`), for GetQuota
    /// and Watch. Engines that cannot show it ignore it.
    fn explain(&mut self, _dimension: Option<usize>, _why: String) {}
}

impl Target for BucketState {
    fn count_429(&mut self) {
        BucketState::count_429(self);
    }
    fn cool_down(&mut self, until: Nanos) {
        BucketState::cool_down(self, until);
    }
    fn learn(&mut self, dimension: usize, rate: Rate, basis: Basis, now: Nanos) -> bool {
        BucketState::learn(self, dimension, rate, basis, now)
    }
    fn fit(&self, dimension: usize) -> Option<Fit> {
        BucketState::fit(self, dimension)
    }
    fn set_fit(&mut self, dimension: usize, fit: Fit) {
        BucketState::set_fit(self, dimension, fit);
    }
    fn drop_guess(&mut self, dimension: usize) -> bool {
        BucketState::drop_guess(self, dimension)
    }
    fn confirm(&mut self) {
        BucketState::confirm(self);
    }
    fn refilled(&self, dimension: usize) -> Refilled {
        BucketState::refilled(self, dimension)
    }
    fn arm_refill_probe(&mut self, dimension: usize, probe_at: Nanos, reset_at: Nanos) {
        BucketState::arm_refill_probe(self, dimension, probe_at, reset_at);
    }
    fn observe_refill(&mut self, dimension: usize, status: u32, seq: Option<u64>, now: Nanos) {
        BucketState::observe_refill(self, dimension, status, seq, now);
    }
    fn succeeded_blind(&mut self, cap: Option<f64>, adapts: bool, now: Nanos) {
        BucketState::succeeded_blind(self, cap, now);
        if !adapts && !self.is_probing() {
            BucketState::confirm(self);
        }
    }
    fn limited_blind(
        &mut self,
        seq: Option<u64>,
        cap: Option<f64>,
        now: Nanos,
        resume_at: Nanos,
    ) -> bool {
        BucketState::limited_blind(self, seq, cap, now, resume_at)
    }
    fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        earliest: Nanos,
        now: Nanos,
    ) -> bool {
        BucketState::correct_down(self, dimension, window_ns, remaining, earliest, now)
    }
    fn block_dimension(&mut self, dimension: usize, until: Nanos) {
        BucketState::block_dimension(self, dimension, until);
    }
    fn cooldown_until(&self) -> Nanos {
        BucketState::cooldown_until(self)
    }
    fn explain(&mut self, dimension: Option<usize>, why: String) {
        BucketState::explain(self, dimension, why);
    }
}

/// The permitted call a report is about.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The permit's sequence number.
    pub seq: u64,
    /// When it was granted, if the engine knows: the upstream answered after that.
    pub granted: Option<Nanos>,
}

/// Apply `obs` to the bucket; `cooldown` is the pause to impose (already decided by the
/// caller from the status, Retry-After and policy), if any; `call`: the reported permit
/// (`None`: a call made without a permit).
pub fn apply(
    def: &ResourceDef,
    bucket: &mut (impl Target + ?Sized),
    obs: &Observation,
    status: u32,
    cooldown: Option<Duration>,
    call: Option<Call>,
    now: Nanos,
) -> Applied {
    let seq = call.map(|c| c.seq);
    // The first instant the upstream can have counted what it reports.
    let earliest = call.and_then(|c| c.granted).unwrap_or(now).min(now);
    let mut out = Applied::default();
    if status == 429 {
        bucket.count_429();
    }
    // No report may stop the resource longer than the operator allows: every pause it
    // imposes (cooldown, exhausted-dimension block, unknown-dimension pause, one unit of a
    // learned limit) ends by `max_retry_after` from now.
    let max_pause = nanos(def.backoff.max_retry_after);
    let latest = now.saturating_add(max_pause);
    if let Some(c) = cooldown {
        out.imposed = true;
        let capped = c > def.backoff.max_retry_after;
        bucket.cool_down(now.saturating_add(nanos(c)).min(latest));
        bucket.explain(
            None,
            format!(
                "upstream answered {status}: paused {}{}",
                secs(c.min(def.backoff.max_retry_after)),
                capped_note(capped, def)
            ),
        );
    }
    let mut confirmed = false;
    let mut probes: Vec<(usize, Nanos, Nanos)> = Vec::new();
    if def.learn_from_headers {
        let answer = Answer {
            status,
            now,
            default_window: if obs.upstream_resource.is_some() {
                GITHUB_WINDOW
            } else {
                DEFAULT_WINDOW
            },
        };
        for d in &obs.dimensions {
            let reset_at = d.reset_after.map(|r| now.saturating_add(nanos(r)));
            let Some(i) = def.dimension_index(&d.dimension) else {
                out.unknown_dimensions += 1;
                if let (Some(0), Some(at)) = (d.remaining, reset_at) {
                    bucket.cool_down(at.min(latest));
                    out.capped |= at > latest;
                    bucket.explain(
                        None,
                        format!(
                            "{}: 0 remaining of {:?}, a dimension the resource does not define; \
                             paused until its reset{}",
                            d.source,
                            d.dimension,
                            capped_note(at > latest, def)
                        ),
                    );
                }
                continue;
            };
            // A reset the dialect calls a window's end, read as "back to full" once a probe
            // showed units coming back before it (a token bucket speaking that dialect).
            let names_window_end =
                d.refill == Refill::AtReset || (d.refill == Refill::Unstated && d.window.is_none());
            if names_window_end {
                bucket.observe_refill(i, status, seq, now);
            }
            let early = names_window_end && bucket.refilled(i) == Refilled::Early;
            let refill = if early { Refill::Continuous } else { d.refill };
            // The limit this report teaches, if it teaches one.
            let mut taught = None;
            let mut probed = false;
            if let Some(limit) = d.limit.filter(|&l| (1..=MAX_AMOUNT).contains(&l)) {
                let (period_ns, basis, pace) = window(def, bucket, d, refill, i, limit, &answer);
                out.pace = out.pace.or(pace);
                // One unit never waits longer than the longest pause allowed.
                let period_ns = period_ns
                    .clamp(MIN_PERIOD_NS, MAX_PERIOD_NS)
                    .min(max_pause.saturating_mul(limit).max(MIN_PERIOD_NS));
                let rate = Rate {
                    amount: limit,
                    period_ns,
                    burst: limit,
                };
                taught = Some(rate);
                probed = basis == Basis::ProbedWindow;
                confirmed = true;
                // A guessed limit gives way to what the upstream says; a known one stays
                // (every limit must have room, so learning can only tighten it).
                if !def.limits_known && bucket.drop_guess(i) {
                    out.limits_changed += 1;
                }
                if bucket.learn(i, rate, basis, now) {
                    out.limits_changed += 1;
                }
            }
            if let Some(r) = d.remaining {
                // A stated window read as coarse is enforced at the pace the calls found.
                let window = match (d.window, taught) {
                    (Some(_), Some(t)) if probed => Some(t.period_ns),
                    (w, _) => w.map(nanos),
                };
                // The count was made between the call's grant and now: a bucket already as
                // low as of the grant fits it, and stays.
                let moved = bucket.correct_down(i, window, r, earliest, now);
                if let (0, Some(reset), Some(at)) = (r, d.reset_after, reset_at) {
                    let period = taught.map(|t| Duration::from_nanos(t.period_ns));
                    let until = match taught {
                        // The correction to 0 already makes the learned limit wait one unit;
                        // the block says so too, in case it could not be learned (too many
                        // windows on the dimension), from the grant when the bucket fit.
                        Some(t)
                            if refills_at_rate(refill, d.window, reset, period, d.resolution) =>
                        {
                            let from = if moved { now } else { earliest };
                            from.saturating_add(t.period_ns.div_ceil(t.amount))
                        }
                        // Untested, with limits that are a guess: one probe at half the way
                        // to the reset tells a window from a bucket (a refusal costs one
                        // 429, once per bucket; a success shows units come back early).
                        _ if names_window_end
                            && def.adapts()
                            && bucket.refilled(i) == Refilled::Unknown =>
                        {
                            let probe_at = now.saturating_add(nanos(reset) / 2);
                            probes.push((i, probe_at, at));
                            probe_at
                        }
                        _ => at,
                    };
                    out.capped |= until > latest;
                    bucket.block_dimension(i, until.min(latest));
                    bucket.explain(
                        Some(i),
                        format!(
                            "{}: 0 remaining; blocked until {}{}",
                            d.source,
                            if until == at {
                                "its reset"
                            } else {
                                "the next unit"
                            },
                            capped_note(until > latest, def)
                        ),
                    );
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
    let cap = def.configured_per_second(0);
    if confirmed {
        bucket.confirm();
        for (i, probe_at, at) in probes {
            bucket.arm_refill_probe(i, probe_at, at);
        }
    } else if (200..300).contains(&status) {
        bucket.succeeded_blind(cap, def.adapts(), now);
    }
    let until = bucket.cooldown_until();
    if status == 429 && obs.dimensions.is_empty() && def.adapts() {
        out.adapted = bucket.limited_blind(seq, cap, now, until.max(now));
    }
    out.cooldown_until = (until > now).then_some(until);
    out
}

/// A duration in whole seconds, or milliseconds below one.
fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.0}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// ", cut to max_retry_after (…)" when a pause was capped.
fn capped_note(capped: bool, def: &ResourceDef) -> String {
    if capped {
        format!(
            ", cut to max_retry_after ({})",
            secs(def.backoff.max_retry_after)
        )
    } else {
        String::new()
    }
}

/// The answer a learned window is read from.
struct Answer {
    status: u32,
    now: Nanos,
    /// The dialect's usual window, when nothing better is known.
    default_window: Duration,
}

/// The window of a limit the upstream taught, and how it was read: as the upstream states
/// it; else fitted from its reset (a token bucket: `limit - remaining` units came back in
/// `reset`, so the whole limit in `reset * limit / (limit - remaining)`; a fixed window: at
/// least the longest reset seen); else the configured limit's on the dimension; else the
/// dialect's usual one.
fn window(
    def: &ResourceDef,
    bucket: &mut (impl Target + ?Sized),
    d: &super::DimensionObs,
    refill: Refill,
    dimension: usize,
    limit: u64,
    answer: &Answer,
) -> (Nanos, Basis, Option<Pace>) {
    let Answer {
        status,
        now,
        default_window,
    } = *answer;
    let mut pace = None;
    // What earlier answers proved for the same limit (a changed limit starts over).
    let before = bucket.fit(dimension).filter(|f| f.amount == limit);
    if let Some(w) = d.window {
        let w = nanos(w);
        // A stated window of a second or two is as coarse as a reset in whole seconds (a
        // policy of one per second may be a bucket of three per second): the calls decide.
        if d.resolution < super::SECONDS || w > COARSE_STATED {
            return (w, Basis::StatedWindow, None);
        }
        let mut f = before.filter(|b| !b.at_reset).unwrap_or(Fit {
            amount: limit,
            hi: w,
            proven: w,
            ..Fit::default()
        });
        f.hi = f.hi.min(w).max(1);
        f.lo = f.lo.max(w.saturating_sub(nanos(super::SECONDS)));
        let pace = try_pace(&mut f, d.remaining == Some(0), status, now);
        bucket.set_fit(dimension, f);
        return (f.window(), Basis::ProbedWindow, pace);
    }
    let reset = d.reset_after.map(nanos).filter(|&r| r > 0);
    let fit = match (refill, reset, d.remaining) {
        // A token bucket that is `deficit` units short is whole in `reset`, at limit/window
        // units per unit of time. The deficit shown is whole units of a fractional level
        // (remaining is rounded down): the real one is between `deficit - 1` and `deficit`,
        // so the answer proves the window is at least reset*limit/deficit and, from two
        // units short on, at most reset*limit/(deficit-1). Bounds from every answer are
        // intersected; the upper one tightens towards the truth as answers come.
        (Refill::Continuous, Some(reset), Some(left)) if left < limit => {
            let before = before.filter(|b| !b.at_reset);
            let deficit = limit - left;
            let over = |t: Nanos, d: u64| {
                u64::try_from(u128::from(t) * u128::from(limit) / u128::from(d)).unwrap_or(u64::MAX)
            };
            // The reset may be rounded up by the dialect's resolution: the lower bound
            // takes that off, the upper one is only the safer for it. A reset in whole
            // seconds is too coarse for bounds on a sub-second refill (the lower one is
            // near zero, and the upper one tightens only with answers a slow pace never
            // brings): there the estimate is the smallest reset*limit/deficit seen, which
            // answers at different points of the second bring down to the truth.
            let coarse = d.resolution >= super::SECONDS;
            // Whole seconds: a reset rounded up is less than a second longer than the truth,
            // so each answer's reset less a second is a lower bound. Absolute instants
            // (GitHub's epoch, Anthropic's RFC 3339) fall at different points of the second
            // and bring both bounds to the truth; a delta in whole seconds shows the same 1
            // for every sub-second refill, and leaves the gap to trials.
            let (lo, hi) = if coarse {
                (
                    over(reset.saturating_sub(nanos(d.resolution)), deficit),
                    over(reset, deficit),
                )
            } else {
                (
                    over(reset.saturating_sub(nanos(d.resolution)), deficit),
                    if deficit >= 2 {
                        over(reset, deficit - 1)
                    } else {
                        0
                    },
                )
            };
            let mut f = match before {
                Some(b) => Fit {
                    lo: b.lo.max(lo),
                    hi: match (b.hi, hi) {
                        (0, h) | (h, 0) => h,
                        (a, h) => a.min(h),
                    },
                    proven: match (b.proven, hi) {
                        (0, h) | (h, 0) => h,
                        (a, h) => a.min(h),
                    },
                    ..b
                },
                None => Fit {
                    amount: limit,
                    lo,
                    hi,
                    proven: hi,
                    ..Fit::default()
                },
            };
            if coarse {
                // A window a 429 proved too short stays behind: answers read late (the reset
                // counted from when the report arrived) must not bring it back.
                if f.too_short > 0 {
                    f.hi = f.hi.max(f.too_short.saturating_add(f.too_short / 16));
                }
                pace = try_pace(&mut f, left == 0, status, now);
            }
            Some(f)
        }
        // A fixed window lasts at least as long as any reset it states, less the rounding
        // of the reset (whole seconds, rounded up).
        (Refill::AtReset | Refill::Unstated, Some(reset), _) => {
            let proven = reset - nanos(d.resolution).min(reset / 2);
            Some(Fit {
                amount: limit,
                lo: before.map_or(0, |b| b.lo).max(proven),
                at_reset: true,
                ..Fit::default()
            })
        }
        _ => before,
    };
    if let Some(f) = fit {
        bucket.set_fit(dimension, f);
        let basis = if f.trial > 0 || f.probed {
            Basis::ProbedWindow
        } else {
            Basis::FittedWindow
        };
        return (f.window(), basis, pace);
    }
    let configured = def
        .limits
        .iter()
        .filter(|l| l.dimension == dimension && l.origin == Origin::Config)
        .map(|l| l.rate.period_ns)
        .min();
    match configured {
        Some(w) => (w, Basis::ConfiguredWindow, None),
        None => (nanos(default_window), Basis::DialectWindow, None),
    }
}

/// What a report did to the trial of a shorter window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// A trial began.
    Tried,
    /// Calls at the trial's pace kept succeeding: it is the window now.
    Held,
    /// A call at a tried pace was refused: the window is longer than that.
    Refused,
}

/// Stated windows up to this long are whole seconds too coarse to trust as they are.
const COARSE_STATED: Nanos = 2_000_000_000;

/// Successes beyond what the window in force allows before a trial is adopted: an
/// upstream's hidden tolerance lets a pace a little too fast succeed a few times.
const TRIAL_MARGIN: u64 = 2;

/// Answers showing the limit spent, under the pace in force, before a trial.
const TRIAL_AFTER: u32 = 3;

/// Resets in whole seconds cannot tell a refill of one unit per second from three: every
/// reset below a second shows as 1. The evidence then is the calls themselves. A trial
/// halves the gap between what the headers and earlier trials prove (`f.lo`) and the
/// window in force (`f.hi`); it is adopted once calls at its pace kept succeeding, and
/// a 429 at a tried pace makes it the lower bound (and an adopted pace that fails later goes
/// back to the one before). Trials stop once the gap is under an eighth of the window, and
/// start only while refusals stay under 1 + 1 % of the successes seen, so probing never
/// costs more than about 1 % of calls.
fn try_pace(f: &mut Fit, exhausted: bool, status: u32, now: Nanos) -> Option<Pace> {
    // Headers that since proved a window as short as the trial's end it; headers that
    // proved an adopted pace too fast overrule it.
    if f.trial > 0 && f.hi > 0 && f.trial >= f.hi {
        f.trial = 0;
    }
    if f.probed && f.hi < f.lo {
        f.hi = f.lo.min(f.proven).max(f.hi);
    }
    if status == 429 {
        f.too_short = f.too_short.max(f.window());
        if f.trial > 0 {
            f.lo = f.lo.max(f.trial);
            f.trial = 0;
        } else if f.probed {
            // The adopted pace succeeded only on the upstream's tolerance.
            f.lo = f.lo.max(f.hi);
            // Back to the pace before, or what the headers prove if that is tighter.
            let back = if f.prev > f.hi {
                f.prev
            } else {
                f.hi.saturating_add(f.hi / 8)
            };
            f.hi = back.min(f.proven).max(f.hi);
            f.prev = 0;
            f.probed = f.hi < f.proven;
        } else if f.hi > 0 {
            // A 429 at the pace the headers proved: they overstated it (a reset read late,
            // or rounded the other way). The observation wins: the window is longer.
            f.lo = f.lo.max(f.hi);
            f.hi = f.hi.saturating_add(f.hi / 8);
            f.proven = f.proven.max(f.hi);
        } else {
            return None;
        }
        f.misses = f.misses.saturating_add(1);
        // The next trial waits for a success: the 429's pause runs first.
        return Some(Pace::Refused);
    }
    if !(200..300).contains(&status) {
        return None;
    }
    f.wins = f.wins.saturating_add(1);
    let mut out = None;
    if f.trial > 0 {
        f.held = f.held.saturating_add(1);
        // Proof is more successes than the window in force could have let through since
        // the trial began (its burst and its rate, plus a margin for a hidden tolerance),
        // over at least two of the trial's windows: calls that merely kept coming at the
        // old pace prove nothing.
        let elapsed = now.saturating_sub(f.since);
        let allowed = u128::from(f.amount)
            + u128::from(f.amount) * u128::from(elapsed) / u128::from(f.hi.max(1))
            + u128::from(TRIAL_MARGIN + f.amount / 8);
        if elapsed < f.trial.saturating_mul(2) || u128::from(f.held) < allowed {
            return None;
        }
        f.prev = f.hi;
        f.hi = f.trial;
        f.trial = 0;
        f.probed = true;
        out = Some(Pace::Held);
    }
    // A trial starts where the pace in force binds: answers showing the limit spent, a
    // few of them, so a fleet that asks for less does not prove a faster pace.
    if exhausted {
        f.bound = f.bound.saturating_add(1);
    }
    let floor = f.lo;
    if f.hi == 0
        || !exhausted
        || f.bound < TRIAL_AFTER
        || f.hi.saturating_sub(floor) <= f.hi / 8
        || f.misses > f.wins / 100
    {
        return out;
    }
    f.trial = if floor == 0 {
        f.hi / 2
    } else {
        floor + (f.hi - floor) / 2
    };
    f.since = now;
    f.held = 0;
    f.bound = 0;
    out.or(Some(Pace::Tried))
}

/// Whether an exhausted dimension (remaining 0, `reset` away) gets its next unit at the rate
/// of the limit this report taught (of window `taught`), rather than all at the reset: then
/// it is blocked for one unit's time only, and the learned limit paces what follows.
///
/// A token bucket that is empty now is whole one window later, and its reset says the
/// latter: blocking until it idles the dimension for a whole window, then lets a full burst
/// through at once, and the capacity refilled during the block is lost at the end. Pacing
/// at the learned rate uses it. A fixed window gives nothing back before its reset, so there
/// the block is right, and with no limit taught there is no rate to pace at.
#[must_use]
pub fn refills_at_rate(
    refill: Refill,
    window: Option<Duration>,
    reset: Duration,
    taught: Option<Duration>,
    resolution: Duration,
) -> bool {
    let Some(period) = taught else {
        return false;
    };
    match refill {
        Refill::AtReset => false,
        // Whole again within the learned window is what the learned rate predicts; a longer
        // reset means the assumed window is wrong (a daily quota), so the reset is the truth.
        // An instant in whole seconds is rounded up by as much as a second more than the
        // window (Anthropic's and GitHub's): read against the window alone, half of the
        // answers of a bucket that refills in a second blocked it to the next second.
        Refill::Continuous => reset <= period.saturating_add(RESET_ROUNDING + resolution),
        // An empty token bucket is whole one window later; a fixed window resets sooner
        // (unless it was emptied within its first second: then one 429, whose Retry-After
        // pauses the bucket until the reset, is the price).
        Refill::Unstated => window.is_some_and(|w| reset.abs_diff(w) <= RESET_ROUNDING),
    }
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
    /// Trials of a shorter window (resets too coarse to fit it), by what became of them.
    pub pace_tried: AtomicU64,
    /// See `pace_tried`.
    pub pace_held: AtomicU64,
    /// See `pace_tried`.
    pub pace_refused: AtomicU64,
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
        match applied.pace {
            Some(Pace::Tried) => add(&self.pace_tried, 1),
            Some(Pace::Held) => add(&self.pace_held, 1),
            Some(Pace::Refused) => add(&self.pace_refused, 1),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::DimensionObs;
    use crate::permits::bucket::Block;
    use crate::permits::resource::{BackoffDef, LimitDef, Origin, REQUESTS, Scope};

    const SEC: u64 = 1_000_000_000;

    /// [`super::apply`] for a report with no permit.
    fn apply(
        def: &ResourceDef,
        bucket: &mut BucketState,
        obs: &Observation,
        status: u32,
        cooldown: Option<Duration>,
        now: Nanos,
    ) -> Applied {
        super::apply(def, bucket, obs, status, cooldown, None, now)
    }

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
            failure_policy: None,
            limits_known: true,
            probe_concurrency: 0,
            accept_feedback_without_permit: false,
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
            refill: Refill::AtReset,
            resolution: crate::feedback::SECONDS,
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

    /// What a remaining of 0 does per dialect, through the real parser: a token bucket
    /// (OpenAI, Anthropic, IETF whose reset is one window away) gets its next grant at the
    /// rate it taught; a fixed window (GitHub, X-RateLimit-*, the older drafts, IETF resetting
    /// before its window ends), a reset beyond the learned window, or no limit to pace at
    /// blocks the dimension until the reset.
    /// A learned limit cannot pause either: one unit of "1 per 359 days" waits at most
    /// `max_retry_after`, and so does a year's Retry-After, and the report says it was cut.
    #[test]
    fn no_pause_outlasts_max_retry_after() {
        let d = def(true, None);
        let max = nanos(d.backoff.max_retry_after);
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_761_393_600);
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let headers = [
            ("x-ratelimit-limit", "1"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "31000000"),
        ];
        let o = crate::feedback::parse(headers.iter().copied(), wall);
        let a = apply(&d, &mut b, &o, 200, None, 0);
        assert!(a.capped);
        match b.check(None, &[1, 0], 0) {
            Err(Block::Rate { wait }) => assert!(wait <= max, "{wait}"),
            other => panic!("{other:?}"),
        }
        // After the capped block, the learned 1-unit limit refills within the cap too.
        assert!(b.check(None, &[1, 0], max + 1).is_ok());
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let o = crate::feedback::parse([("retry-after", "31000000")], wall);
        apply(
            &d,
            &mut b,
            &o,
            429,
            Some(Duration::from_secs(31_000_000)),
            0,
        );
        assert_eq!(b.cooldown_until(), max);
        assert!(
            b.cooldown_why().contains("cut to max_retry_after"),
            "{}",
            b.cooldown_why()
        );
    }

    #[test]
    fn exhausted_dimension_per_dialect() {
        const MS: u64 = 1_000_000;
        // A minute before 2025-10-25T12:00:00Z, for the RFC 3339 and epoch resets.
        let epoch = 1_761_393_600 - 60;
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(epoch);
        let in_964 = (epoch + 964).to_string();
        // (case, headers, the wait for one request right after the report)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Nanos);
        let table: &[Case<'_>] = &[
            (
                "ietf token bucket 50/1s",
                &[
                    ("ratelimit-policy", r#""d";q=50;w=1"#),
                    ("ratelimit", r#""d";r=0;t=1"#),
                ],
                20 * MS,
            ),
            (
                "ietf 100/min, reset rounded down",
                &[
                    ("ratelimit-policy", r#""d";q=100;w=60"#),
                    ("ratelimit", r#""d";r=0;t=59"#),
                ],
                600 * MS,
            ),
            (
                "ietf fixed window, mid-window",
                &[
                    ("ratelimit-policy", r#""d";q=100;w=60"#),
                    ("ratelimit", r#""d";r=0;t=30"#),
                ],
                30 * SEC,
            ),
            (
                "ietf no policy",
                &[("ratelimit", r#""d";r=0;t=5"#)],
                5 * SEC,
            ),
            (
                "openai 3000/min, just emptied",
                &[
                    ("x-ratelimit-limit-requests", "3000"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1m0s"),
                ],
                // Remaining is rounded down: 2 999 to 3 000 units came back in 60 s.
                20_006_669,
            ),
            (
                "openai 3000 back to full in 1s: 3000/s",
                &[
                    ("x-ratelimit-limit-requests", "3000"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1s"),
                ],
                333_445,
            ),
            (
                "openai burst 1, 3/s",
                &[
                    ("x-ratelimit-limit-requests", "1"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "333ms"),
                ],
                // Rounded up to the millisecond: back in at least 332 ms.
                332 * MS,
            ),
            (
                "openai 60 back in 6 h: a unit every 6 min, not a block of 6 h",
                &[
                    ("x-ratelimit-limit-requests", "60"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "6h0m0s"),
                ],
                366_101_694_916,
            ),
            (
                "openai no limit",
                &[
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1s"),
                ],
                SEC,
            ),
            (
                "anthropic 50/min",
                &[
                    ("anthropic-ratelimit-requests-limit", "50"),
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    ("anthropic-ratelimit-requests-reset", "2025-10-25T12:00:00Z"),
                ],
                1200 * MS,
            ),
            (
                "github",
                &[
                    ("x-ratelimit-limit", "5000"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &in_964),
                    ("x-ratelimit-resource", "core"),
                ],
                // The reset is 964 s away; no pause outlasts max_retry_after (15 min).
                900 * SEC,
            ),
            (
                "x-ratelimit delta",
                &[
                    ("x-ratelimit-limit", "100"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "30"),
                ],
                30 * SEC,
            ),
            (
                "older draft",
                &[
                    ("ratelimit-limit", "100"),
                    ("ratelimit-remaining", "0"),
                    ("ratelimit-reset", "30"),
                ],
                30 * SEC,
            ),
            (
                "ietf token bucket and a fixed window",
                &[
                    ("ratelimit-policy", r#""d";q=50;w=1"#),
                    ("ratelimit", r#""d";r=0;t=1"#),
                    ("x-ratelimit-limit", "50"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "30"),
                ],
                30 * SEC,
            ),
        ];
        for &(name, headers, want) in table {
            let d = def(true, None);
            let mut b = BucketState::new(&d, Scope::Resource, true);
            let o = crate::feedback::parse(headers.iter().copied(), wall);
            assert_eq!(o.dimensions.first().map(|d| d.remaining), Some(Some(0)));
            apply(&d, &mut b, &o, 200, None, 0);
            assert_eq!(
                b.check(None, &[1, 0], 0),
                Err(Block::Rate { wait: want }),
                "{name}"
            );
        }
    }

    /// A report is read as of its call's grant, not of its arrival: a burst of one is paced
    /// by its grants, so the round trip of each call (5 ms here) is not added to each unit.
    #[test]
    fn a_report_is_read_from_its_calls_grant() {
        const MS: u64 = SEC / 1000;
        let run = |grant_known: bool| -> Nanos {
            let mut d = def(true, Some(1000));
            d.limits_known = false;
            let mut b = BucketState::new(&d, Scope::Resource, true);
            let o = crate::feedback::parse(
                [
                    ("x-ratelimit-limit-requests", "1"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "100ms"),
                ],
                std::time::UNIX_EPOCH,
            );
            let mut t = 0;
            for seq in 1..=20 {
                while b.check(None, &[1, 0], t).is_err() {
                    t += MS / 10;
                }
                b.commit(None, vec![1, 0].into_boxed_slice(), t, SEC, seq, 1);
                let answered = t + 5 * MS;
                let granted =
                    b.release(None, seq, 1, crate::permits::bucket::Settle::Keep, answered);
                assert_eq!(granted, Some(t));
                let call = Call {
                    seq,
                    granted: granted.filter(|_| grant_known),
                };
                super::apply(&d, &mut b, &o, 200, None, Some(call), answered);
            }
            t
        };
        // The 20th grant: 19 units of 100 ms after the first (the fitted window rounds up
        // by at most a millisecond), against 105 ms each when read as of the report.
        let paced = run(true);
        assert!(paced <= 19 * 101 * MS, "{paced}");
        let late = run(false);
        assert!(late >= 19 * 104 * MS, "{late}");
    }

    /// A guess (limits not known) gives way to what the upstream says, up or down, with the
    /// window fitted from the reset; slow start ends at that first lesson.
    #[test]
    fn guess_replaced_by_fitted_limit() {
        let mut d = def(true, Some(1000));
        d.limits_known = false;
        d.probe_concurrency = 1;
        let mut b = BucketState::new(&d, Scope::Resource, true);
        assert!(b.is_probing());
        b.commit(None, vec![1, 0].into_boxed_slice(), 0, SEC, 1, 1);
        assert!(
            matches!(b.check(None, &[1, 0], 0), Err(Block::Concurrency { .. })),
            "one probe in flight"
        );
        let o = crate::feedback::parse(
            [
                ("x-ratelimit-limit-requests", "10"),
                ("x-ratelimit-remaining-requests", "9"),
                ("x-ratelimit-reset-requests", "100ms"),
            ],
            std::time::UNIX_EPOCH,
        );
        let a = apply(&d, &mut b, &o, 200, None, 0);
        assert_eq!(a.limits_changed, 2, "guess dropped, limit learned");
        assert!(!b.is_probing());
        let only: Vec<_> = b
            .limits
            .iter()
            .map(|l| (l.origin, l.basis, l.state.rate()))
            .collect();
        assert_eq!(
            only,
            vec![(
                Origin::Learned,
                Basis::FittedWindow,
                Rate {
                    amount: 10,
                    // One unit back in 100 ms (rounded up to the millisecond): 10 in 990 ms
                    // at least.
                    period_ns: 990 * 1_000_000,
                    burst: 10
                }
            )]
        );
        assert_eq!(b.check(None, &[1, 0], 0), Ok(()), "probe slot lifted");
    }

    /// A header-less upstream: slow start ends after three successes, the adaptive rate
    /// ramps (pacing the probes too), a 429 without headers cuts it to 17/20 of what
    /// succeeded over the last second and pauses for the Retry-After; after the pause grants
    /// are paced one at a time.
    #[test]
    fn header_less_upstream_adapts() {
        let mut d = def(true, Some(1000));
        d.limits_known = false;
        d.probe_concurrency = 1;
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let none = obs(vec![]);
        let mut seq = 0;
        let mut t = SEC;
        for _ in 0..8 {
            seq += 1;
            assert_eq!(b.check(None, &[1, 0], t), Ok(()));
            b.commit(None, vec![1, 0].into_boxed_slice(), t, SEC, seq, 1);
            b.release(None, seq, 1, crate::permits::bucket::Settle::Keep, t);
            apply(&d, &mut b, &none, 200, None, t);
            t += SEC / 4;
        }
        // The ramp paced the probes too: 8 steps from 3/s.
        assert_eq!(b.adaptive().map(|a| a.milli), Some(11_000));
        assert!(!b.is_probing());
        let a = super::apply(
            &d,
            &mut b,
            &none,
            429,
            Some(Duration::from_secs(1)),
            Some(Call { seq, granted: None }),
            t,
        );
        assert!(a.adapted && a.imposed);
        // 4 successes over the last second: 4/s; 17/20 of it.
        assert_eq!(b.adaptive().map(|a| a.milli), Some(3_400));
        assert!(matches!(
            b.check(None, &[1, 0], t),
            Err(Block::Cooldown { .. })
        ));
        // A second 429 of a permit granted before the cut is the same loss.
        let a = super::apply(
            &d,
            &mut b,
            &none,
            429,
            None,
            Some(Call {
                seq: seq - 1,
                granted: None,
            }),
            t,
        );
        assert!(!a.adapted);
        let resume = t + SEC;
        assert_eq!(b.check(None, &[1, 0], resume), Ok(()));
        b.commit(None, vec![1, 0].into_boxed_slice(), resume, SEC, seq + 1, 1);
        // The next one a unit later at 3.4/s: 294.1 ms.
        assert_eq!(
            b.check(None, &[1, 0], resume),
            Err(Block::Rate { wait: 294_117_648 })
        );
    }

    /// A fixed window's dialect (classic `X-RateLimit-*`) on limits that are a guess: at 0
    /// remaining one probe goes at half the way to the reset. A success shows units come
    /// back early, and the reset is read as "back to full" from then on; a refusal shows a
    /// real window, whose blocks last until the reset.
    #[test]
    fn probe_before_a_window_reset() {
        let headers = |left: &'static str, reset: &'static str| {
            crate::feedback::parse(
                [
                    ("x-ratelimit-limit", "1"),
                    ("x-ratelimit-remaining", left),
                    ("x-ratelimit-reset", reset),
                ],
                std::time::UNIX_EPOCH,
            )
        };
        for (answer, early) in [(200, true), (429, false)] {
            let mut d = def(true, None);
            d.limits_known = false;
            let mut b = BucketState::new(&d, Scope::Resource, true);
            // A fixed window takes two refusals: one may be a probe a little early.
            let tries = if early { 1 } else { 2 };
            let mut t = 0;
            for n in 1..=tries {
                apply(&d, &mut b, &headers("0", "2"), 200, None, t);
                assert_eq!(b.check(None, &[1, 0], t), Err(Block::Rate { wait: SEC }));
                t += SEC;
                assert_eq!(b.check(None, &[1, 0], t), Ok(()), "the probe at half way");
                b.commit(None, vec![1, 0].into_boxed_slice(), t, SEC, n, 1);
                assert!(
                    matches!(b.check(None, &[1, 0], t), Err(Block::Concurrency { .. })),
                    "one probe only"
                );
                b.release(None, n, 1, crate::permits::bucket::Settle::Keep, t);
                apply(&d, &mut b, &headers("0", "1"), answer, None, t);
                if n < tries {
                    assert_eq!(
                        b.refilled(0),
                        Refilled::Unknown,
                        "one refusal is not enough"
                    );
                    t += 2 * SEC;
                }
            }
            let want = if early {
                Refilled::Early
            } else {
                Refilled::AtReset
            };
            assert_eq!(b.refilled(0), want);
            let wait = b.check(None, &[1, 0], t).err();
            // Early: back to full in 1 s with 1 used, one per second. A window: until the
            // reset (resets of 2 s prove a window of at least 1 s, being whole seconds
            // rounded up).
            assert_eq!(wait, Some(Block::Rate { wait: SEC }));
            if !early {
                // Never probed again.
                t += 2 * SEC;
                apply(&d, &mut b, &headers("0", "2"), 200, None, t);
                assert_eq!(
                    b.check(None, &[1, 0], t),
                    Err(Block::Rate { wait: 2 * SEC })
                );
                assert!(!b.is_probing());
            }
        }
    }

    /// With limits known there is no slow start and no adaptive rate.
    #[test]
    fn known_limits_do_not_adapt() {
        let d = def(true, Some(10));
        let mut b = BucketState::new(&d, Scope::Resource, true);
        assert!(!b.is_probing());
        let a = apply(&d, &mut b, &obs(vec![]), 429, None, 0);
        assert!(!a.adapted && b.adaptive().is_none());
    }

    /// The rule alone: the refill kind, the reset against the windows, and no taught limit.
    #[test]
    fn refills_at_rate_rule() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let (fine, whole) = (crate::feedback::MILLISECONDS, crate::feedback::SECONDS);
        let table = [
            (Refill::Continuous, None, s(1), Some(s(60)), fine, true),
            (Refill::Continuous, None, s(61), Some(s(60)), fine, true),
            (Refill::Continuous, None, s(62), Some(s(60)), fine, false),
            (Refill::Continuous, None, s(1), None, fine, false),
            // A whole-second instant: up to 2 s after a 900 ms window's start still fits.
            (
                Refill::Continuous,
                None,
                ms(1_950),
                Some(ms(900)),
                fine,
                false,
            ),
            (
                Refill::Continuous,
                None,
                ms(1_950),
                Some(ms(900)),
                whole,
                true,
            ),
            (
                Refill::Continuous,
                None,
                ms(2_950),
                Some(ms(900)),
                whole,
                false,
            ),
            (
                Refill::Unstated,
                Some(s(60)),
                s(59),
                Some(s(60)),
                whole,
                true,
            ),
            (
                Refill::Unstated,
                Some(s(60)),
                s(61),
                Some(s(60)),
                whole,
                true,
            ),
            (
                Refill::Unstated,
                Some(s(60)),
                s(58),
                Some(s(60)),
                whole,
                false,
            ),
            (Refill::Unstated, None, s(60), Some(s(60)), whole, false),
            (
                Refill::AtReset,
                Some(s(60)),
                s(60),
                Some(s(60)),
                whole,
                false,
            ),
        ];
        for (refill, window, reset, taught, resolution, want) in table {
            assert_eq!(
                refills_at_rate(refill, window, reset, taught, resolution),
                want,
                "{refill:?} window {window:?} reset {reset:?} taught {taught:?}"
            );
        }
    }

    /// A token bucket's exhaustion still waits one unit when its window could not be learned
    /// (the dimension already holds as many learned windows as allowed).
    #[test]
    fn exhausted_unlearned_window_waits_one_unit() {
        let d = def(true, None);
        let mut b = BucketState::new(&d, Scope::Resource, true);
        for w in 2..6 {
            let rate = Rate {
                amount: 1000,
                period_ns: w * SEC,
                burst: 1000,
            };
            assert!(b.learn(0, rate, Basis::StatedWindow, 0));
        }
        let o = crate::feedback::parse(
            [
                ("ratelimit-policy", r#""d";q=50;w=1"#),
                ("ratelimit", r#""d";r=0;t=1"#),
            ],
            std::time::UNIX_EPOCH,
        );
        let a = apply(&d, &mut b, &o, 200, None, 0);
        assert_eq!(a.limits_changed, 0, "no room for a fifth window");
        assert_eq!(
            b.check(None, &[1, 0], 0),
            Err(Block::Rate { wait: 20_000_000 })
        );
    }

    /// Only the probe's own answer judges it: 429s of calls granted before it (a burst
    /// that overran) do not make a token bucket look like a fixed window.
    #[test]
    fn a_probe_is_judged_by_its_own_answer() {
        let mut d = def(true, None);
        d.limits_known = false;
        let mut b = BucketState::new(&d, Scope::Resource, true);
        let headers = |left: &str| {
            crate::feedback::parse(
                [
                    ("x-ratelimit-limit", "2"),
                    ("x-ratelimit-remaining", left),
                    ("x-ratelimit-reset", "2"),
                ],
                std::time::UNIX_EPOCH,
            )
        };
        b.commit(None, vec![1, 0].into_boxed_slice(), 0, SEC, 1, 1);
        super::apply(
            &d,
            &mut b,
            &headers("0"),
            200,
            None,
            Some(Call {
                seq: 1,
                granted: None,
            }),
            0,
        );
        for _ in 0..3 {
            super::apply(
                &d,
                &mut b,
                &headers("0"),
                429,
                None,
                Some(Call {
                    seq: 1,
                    granted: None,
                }),
                0,
            );
        }
        assert_eq!(b.refilled(0), Refilled::Unknown, "earlier calls' 429s");
        b.commit(None, vec![1, 0].into_boxed_slice(), SEC, SEC, 2, 2);
        super::apply(
            &d,
            &mut b,
            &headers("0"),
            200,
            None,
            Some(Call {
                seq: 2,
                granted: None,
            }),
            SEC,
        );
        assert_eq!(b.refilled(0), Refilled::Early, "the probe's success");
    }
}

/// Trials of a shorter window against simulated token buckets whose whole-second resets
/// always show 1: the fleet ends near the true pace, and refusals stay within the budget.
#[cfg(test)]
mod pace_tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    /// Calls at the enforced pace for `secs` against a bucket of one unit (plus `slack`
    /// hidden) refilling every `unit` ns; each 429 pauses one second (its Retry-After).
    /// Returns (successes, refusals, successes in the second half, the final window).
    fn run(unit: Nanos, slack: f64, secs: u64) -> (u64, u64, u64, Nanos) {
        let mut f = Fit {
            amount: 1,
            hi: SEC,
            proven: SEC,
            ..Fit::default()
        };
        let (mut t, mut last, mut level) = (0u64, 0u64, 1.0 + slack);
        let (mut ok, mut refused, mut late) = (0, 0, 0);
        #[allow(clippy::cast_precision_loss)]
        while t < secs * SEC {
            level = (level + (t - last) as f64 / unit as f64).min(1.0 + slack);
            last = t;
            let status = if level >= 1.0 {
                level -= 1.0;
                ok += 1;
                if t >= secs * SEC / 2 {
                    late += 1;
                }
                200
            } else {
                refused += 1;
                429
            };
            // Every answer shows the reset of one unit, rounded up to whole seconds.
            let _ = try_pace(&mut f, true, status, t);
            t += if status == 429 { SEC } else { f.window() };
        }
        (ok, refused, late, f.window())
    }

    #[test]
    fn sub_second_refills_are_found() {
        for (per_sec, slack) in [(3, 1.0), (10, 1.0), (50, 1.0), (3, 0.0), (50, 2.0)] {
            let unit = SEC / per_sec;
            let (ok, refused, late, w) = run(unit, slack, 120);
            assert!(
                refused <= 1 + ok / 100,
                "{per_sec}/s slack {slack}: {refused} refused of {ok}"
            );
            // Utilisation over the second minute, and a window that does not undercut it.
            let allowed = 60 * per_sec;
            assert!(
                late * 100 >= allowed * 85,
                "{per_sec}/s slack {slack}: {late} of {allowed} (window {w} ns)"
            );
        }
    }

    /// Where a second per unit is the truth, the first minute costs one refusal (the one
    /// a trial must risk: the headers look the same as at 3/s), and the window stays.
    #[test]
    fn one_per_second_costs_at_most_one_refusal_a_minute() {
        for slack in [0.0, 1.0] {
            let (ok, refused, _, w) = run(SEC, slack, 60);
            assert!(refused <= 1, "{refused} refused of {ok}");
            let (ok, refused, _, w2) = run(SEC, slack, 600);
            assert!(refused <= 1 + ok / 100, "{refused} refused of {ok}");
            assert!(w.min(w2) >= SEC - SEC / 8, "window {w} / {w2}");
        }
    }

    /// Through `apply`, as a server sees it: an IETF upstream whose policy says one per
    /// second (`w` is whole seconds) while its bucket refills three per second. The calls
    /// that succeed at a faster pace overrule the stated window, and say so.
    #[test]
    fn a_coarse_stated_window_gives_way_to_the_calls() {
        use crate::permits::resource::{BackoffDef, Origin, REQUESTS, Scope};
        let def = ResourceDef {
            name: "r".into(),
            dimensions: vec![REQUESTS.into()],
            declared_dimensions: vec![],
            limits: vec![],
            concurrency: 0,
            lease: Duration::from_secs(60),
            per_partition: false,
            backoff: BackoffDef::default(),
            max_queue: 10,
            learn_from_headers: true,
            failure_policy: None,
            limits_known: false,
            probe_concurrency: 0,
            accept_feedback_without_permit: false,
        };
        let mut b = BucketState::new(&def, Scope::Resource, true);
        let unit = SEC / 3;
        let (mut t, mut last, mut level) = (0u64, 0u64, 2.0f64);
        let mut refused = 0;
        while t < 60 * SEC {
            #[allow(clippy::cast_precision_loss)]
            let refill = (t - last) as f64 / unit as f64;
            level = (level + refill).min(2.0);
            last = t;
            let status = if level >= 1.0 {
                level -= 1.0;
                200
            } else {
                refused += 1;
                429
            };
            let o = crate::feedback::parse(
                [
                    ("ratelimit-policy", r#""d";q=1;w=1"#),
                    ("ratelimit", r#""d";r=0;t=1"#),
                ],
                std::time::UNIX_EPOCH,
            );
            let _ = super::apply(&def, &mut b, &o, status, None, None, t);
            let slot = b.limits.iter().find(|l| l.origin == Origin::Learned);
            let period = slot.map_or(SEC, |l| l.state.rate().period_ns);
            t += if status == 429 { SEC } else { period };
        }
        let slot = b.limits.iter().find(|l| l.origin == Origin::Learned);
        let (basis, period) = slot.map(|l| (l.basis, l.state.rate().period_ns)).unzip();
        assert_eq!(basis, Some(Basis::ProbedWindow));
        assert!(period.is_some_and(|p| p <= SEC / 2), "{period:?}");
        assert!(refused <= 2, "{refused} refused");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any refill between 20 ms and 1 s per unit, any hidden tolerance up to two units:
        /// refusals within 1 + 1 % of successes over ten minutes, and the last five minutes
        /// at least 80 % used.
        #[test]
        fn probing_stays_in_budget(unit_ms in 20u64..=1000, slack in 0u8..=2) {
            let unit = unit_ms * 1_000_000;
            let (ok, refused, late, _) = run(unit, f64::from(slack), 600);
            prop_assert!(refused <= 1 + ok / 100, "{} refused of {}", refused, ok);
            let allowed = 300 * SEC / unit;
            prop_assert!(late * 100 >= allowed * 80, "{} of {}", late, allowed);
        }
    }
}
