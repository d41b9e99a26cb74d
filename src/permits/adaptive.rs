//! Slow start and the adaptive rate: how a bucket behaves while the upstream has not told
//! permitd its limits.
//!
//! A resource whose limits are a guess (not `limits_known`) starts *probing*: at most
//! `probe_concurrency` permits in flight, so a cold fleet does not spend the upstream's
//! whole burst (and then some) before the first answer can teach anything. Probing ends at
//! the first response whose headers teach a limit (the learned limits take over and this
//! state is dropped) or after [`PROBE_SUCCESSES`] successes without rate-limit headers.
//!
//! An upstream that never sends rate-limit headers gets an *adaptive rate* on the
//! `requests` dimension, as TCP congestion control does with a window: it ramps up from
//! [`RAMP_START_MILLI`] by one unit per second per success (doubling about every second at
//! saturation) until the first 429 without headers; each such 429 cuts it to
//! [`CUT_NUM`]/[`CUT_DEN`] of the rate that actually succeeded since the last cut, then it
//! grows back additively while calls succeed, never above the configured (guessed) rate. The
//! 429s of permits granted before a cut are the same loss event and cut nothing more.
//!
//! Rates are integers in milli-units per second, like every rate here; pure: `now` is given.

use super::limit::Rate;
use crate::clock::Nanos;

/// Successes without rate-limit headers that end a slow start.
pub const PROBE_SUCCESSES: u64 = 3;
/// Where the header-less ramp starts: 3 units per second.
pub const RAMP_START_MILLI: u64 = 3_000;
/// The lowest adaptive rate: one unit per 100 s.
pub const MIN_MILLI: u64 = 10;
/// A cut keeps 4/5 of what succeeded.
pub const CUT_NUM: u64 = 4;
/// See [`CUT_NUM`].
pub const CUT_DEN: u64 = 5;
/// After a cut the rate grows by 1/20 of the cut rate per second while calls succeed.
pub const GROWTH_DIVISOR: u64 = 20;
/// The adaptive limit's period: amounts are milli-units per second.
const PERIOD_NS: u64 = 1_000 * SEC;
const SEC: u64 = 1_000_000_000;

/// How the adaptive rate got its value (the reason GetQuota shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Slow start's ramp: growing by one unit per second per success.
    Ramp,
    /// Cut after a 429 without rate-limit headers, growing back additively since.
    Cut,
}

/// A bucket's slow start and adaptive rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adaptive {
    /// Permits allowed in flight while probing; 0 once probing is over.
    pub probe: u32,
    /// The adaptive rate in milli-units per second; 0 = none (still probing).
    pub milli: u64,
    /// Additive growth after a cut, in milli-units per second per second at saturation;
    /// 0 while ramping.
    incr: u64,
    /// Successes are counted from here (the first grant, then each cooldown's end).
    epoch: Nanos,
    /// Successes since `epoch`.
    ok: u64,
    /// The highest permit sequence granted so far, and the first one after the last cut.
    last_seq: u64,
    cut_seq: u64,
    /// What succeeded before the last cut, milli-units per second (for the reason).
    pub estimate_milli: u64,
    /// The last step.
    pub step: Step,
}

impl Adaptive {
    /// A bucket starting slow: `probe` permits in flight.
    #[must_use]
    pub fn probing(probe: u32) -> Self {
        Self {
            probe,
            milli: 0,
            incr: 0,
            epoch: 0,
            ok: 0,
            last_seq: 0,
            cut_seq: 0,
            estimate_milli: 0,
            step: Step::Ramp,
        }
    }

    /// Whether slow start still limits permits in flight.
    #[must_use]
    pub fn is_probing(&self) -> bool {
        self.probe > 0
    }

    /// A permit `seq` was granted at `now`.
    pub fn granted(&mut self, seq: u64, now: Nanos) {
        if self.epoch == 0 {
            self.epoch = now;
        }
        self.last_seq = self.last_seq.max(seq);
    }

    /// A call succeeded without teaching a limit; `cap_milli`: the configured rate, if any.
    /// Returns true when the adaptive rate changed (or began).
    pub fn succeeded(&mut self, cap_milli: Option<u64>) -> bool {
        self.ok = self.ok.saturating_add(1);
        if self.probe > 0 {
            if self.ok < PROBE_SUCCESSES {
                return false;
            }
            self.probe = 0;
            self.milli = RAMP_START_MILLI;
            self.step = Step::Ramp;
        } else if self.milli == 0 {
            return false;
        } else if self.incr == 0 {
            self.milli = self.milli.saturating_add(1_000);
        } else {
            // +incr per second at saturation, where `milli` successes come per 1 000 s.
            let d = u128::from(self.incr) * 1_000 / u128::from(self.milli.max(1));
            self.milli = self
                .milli
                .saturating_add(u64::try_from(d).unwrap_or(u64::MAX).max(1));
        }
        self.milli = cap(self.milli, cap_milli);
        true
    }

    /// A permit was released as used with no outcome reported (ReleasePermit): the call
    /// was made, but nothing says how it went. Counts towards ending slow start, so a fleet
    /// that never reports is not held to the probe; starts no ramp. Returns true when
    /// probing ended.
    pub fn completed(&mut self) -> bool {
        if self.probe == 0 {
            return false;
        }
        self.ok = self.ok.saturating_add(1);
        if self.ok < PROBE_SUCCESSES {
            return false;
        }
        self.probe = 0;
        true
    }

    /// A 429 without rate-limit headers answered the permit `seq` (`None`: a call made
    /// without one) at `now`; calls resume at `resume_at` (the cooldown's end). Returns true
    /// when the rate was cut; false when the permit was in flight at the last cut already.
    pub fn limited(
        &mut self,
        seq: Option<u64>,
        cap_milli: Option<u64>,
        now: Nanos,
        resume_at: Nanos,
    ) -> bool {
        if seq.is_some_and(|s| s < self.cut_seq) {
            return false;
        }
        let elapsed = now.saturating_sub(self.epoch).max(SEC);
        let est = u128::from(self.ok) * 1_000 * u128::from(SEC) / u128::from(elapsed);
        let est = u64::try_from(est).unwrap_or(u64::MAX);
        let base = match (self.milli, self.ok) {
            (0, 0) => cap_milli.unwrap_or(RAMP_START_MILLI).min(RAMP_START_MILLI),
            (0, _) => est,
            (m, 0) => m,
            (m, _) => m.min(est),
        };
        self.milli = cap(
            (base / CUT_DEN).saturating_mul(CUT_NUM).max(MIN_MILLI),
            cap_milli,
        );
        self.incr = (self.milli / GROWTH_DIVISOR).max(1);
        self.estimate_milli = est;
        self.step = Step::Cut;
        self.probe = 0;
        self.epoch = resume_at.max(now);
        self.ok = 0;
        self.cut_seq = self.last_seq.saturating_add(1);
        true
    }

    /// The limit that enforces the adaptive rate, if there is one: paced one unit at a time
    /// below 50/s (an unknown upstream may have no burst at all), 20 ms worth above.
    #[must_use]
    pub fn rate(&self) -> Option<Rate> {
        (self.milli > 0).then(|| Rate {
            amount: self.milli,
            period_ns: PERIOD_NS,
            burst: (self.milli / 50_000).max(1),
        })
    }
}

fn cap(milli: u64, cap_milli: Option<u64>) -> u64 {
    cap_milli.map_or(milli, |c| milli.min(c.max(MIN_MILLI)))
}

/// A rate in units per second as milli-units per second.
#[must_use]
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
pub fn milli_of(per_second: f64) -> u64 {
    (per_second * 1_000.0).clamp(0.0, 1e15) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probing ends after three successes and the ramp begins at 3/s, growing one unit per
    /// second per success, never above the guess.
    #[test]
    fn probe_then_ramp() {
        let mut a = Adaptive::probing(1);
        a.granted(1, SEC);
        assert!(!a.succeeded(None) && !a.succeeded(None));
        assert!(a.is_probing());
        assert!(a.succeeded(None));
        assert!(!a.is_probing());
        assert_eq!(a.milli, 3_000);
        a.succeeded(None);
        assert_eq!(a.milli, 4_000);
        a.succeeded(Some(4_500));
        assert_eq!(a.milli, 4_500, "capped at the guess");
    }

    /// A cut keeps 4/5 of what succeeded since the epoch (at least over a second); the 429s
    /// of permits in flight at the cut cut nothing more; growth is additive after.
    #[test]
    fn cut_once_per_loss_then_grow() {
        let mut a = Adaptive::probing(1);
        a.granted(1, SEC);
        for s in 2..=20 {
            a.granted(s, SEC);
            a.succeeded(None);
        }
        assert_eq!(a.milli, 3_000 + 16 * 1_000);
        // 19 successes over 2 s: 9.5/s succeeded; cut to 7.6/s.
        assert!(a.limited(Some(20), None, 3 * SEC, 4 * SEC));
        assert_eq!(
            (a.milli, a.estimate_milli, a.step),
            (7_600, 9_500, Step::Cut)
        );
        assert!(
            !a.limited(Some(19), None, 3 * SEC, 4 * SEC),
            "same loss event"
        );
        a.succeeded(None);
        // +380 milli per second over 7.6 successes per second: 50 per success.
        assert_eq!(a.milli, 7_650);
        a.granted(21, 5 * SEC);
        assert!(a.limited(Some(21), None, 5 * SEC, 6 * SEC));
        // One success over the floor of a second since the cooldown's end: 1/s.
        assert_eq!(a.milli, 800);
    }

    /// Repeated losses never take the rate below its floor.
    #[test]
    fn floor() {
        let mut a = Adaptive::probing(0);
        for s in 0..100 {
            a.granted(s, SEC);
            a.limited(Some(s), None, SEC, SEC);
        }
        assert_eq!(a.milli, MIN_MILLI);
        assert_eq!(
            a.rate(),
            Some(Rate {
                amount: MIN_MILLI,
                period_ns: PERIOD_NS,
                burst: 1
            })
        );
    }
}
