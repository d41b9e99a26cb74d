//! Slow start and the adaptive rate: how a bucket behaves while the upstream has not told
//! permitd its limits.
//!
//! A resource whose limits are a guess (not `limits_known`) starts *probing*: at most
//! `probe_concurrency` permits in flight, so a cold fleet does not spend the upstream's
//! whole burst (and then some) before the first answer can teach anything. Probing ends at
//! the first response whose headers teach a limit (the learned limits take over and this
//! state is dropped) or after [`PROBE_SUCCESSES`] successes without rate-limit headers.
//!
//! Where the resource adapts (its limits are a guess), the probes and everything after them
//! are also paced by an *adaptive rate* on the `requests` dimension, as TCP congestion
//! control does with a window: it ramps up from [`RAMP_START_MILLI`] by one unit per second
//! per success (doubling about every 0.7 s at saturation) until the first 429 without
//! rate-limit headers; each such 429 cuts it to [`CUT_NUM`]/[`CUT_DEN`] of what succeeded
//! over the last second (the upstream's real rate, when the fleet was pushing), then it
//! grows back by [`GROWTH_DIVISOR`]th of itself per second while calls succeed, so the
//! cut's gap closes in about 15 s whatever the rate, and a 429 (with the cooldown its
//! Retry-After imposes) comes once in tens of seconds. Never above the configured guess. The
//! 429s of permits granted before a cut are the same loss and cut nothing more. An answer
//! whose headers teach a limit ends all of this: the learned limits take over.
//!
//! Rates are integers in milli-units per second, like every rate here; pure: `now` is given.

use super::limit::Rate;
use crate::clock::Nanos;

/// Successes without rate-limit headers that end a slow start.
pub const PROBE_SUCCESSES: u64 = 3;
/// Where the ramp starts: 3 units per second.
pub const RAMP_START_MILLI: u64 = 3_000;
/// The lowest adaptive rate: one unit per 100 s.
pub const MIN_MILLI: u64 = 10;
/// A cut keeps 17/20 of what succeeded.
pub const CUT_NUM: u64 = 17;
/// See [`CUT_NUM`].
pub const CUT_DEN: u64 = 20;
/// After a cut the rate grows by 1/100 of itself per second while calls succeed.
pub const GROWTH_DIVISOR: u64 = 100;
/// The adaptive limit's period: amounts are milli-units per second.
const PERIOD_NS: u64 = 1_000 * SEC;
const SEC: u64 = 1_000_000_000;

/// How the adaptive rate got its value (the reason GetQuota shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Slow start's ramp: growing by one unit per second per success.
    Ramp,
    /// Cut after a 429 without rate-limit headers, growing back since.
    Cut,
}

/// A bucket's slow start and adaptive rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adaptive {
    /// Permits allowed in flight while probing; 0 once probing is over.
    pub probe: u32,
    /// The adaptive rate in milli-units per second; 0 = none.
    pub milli: u64,
    /// Growth after a cut, in milli-units per second per second at saturation; 0 while
    /// ramping.
    incr: u64,
    /// Successes while probing.
    probed: u64,
    /// Successes counted in one-second windows: the current one (from `window`), the last.
    window: Nanos,
    in_window: u64,
    last_window: u64,
    /// The highest permit sequence granted so far, and the first one after the last cut.
    last_seq: u64,
    cut_seq: u64,
    /// What succeeded over the second before the last cut, milli-units per second.
    pub estimate_milli: u64,
    /// The last step.
    pub step: Step,
}

impl Adaptive {
    /// A bucket starting slow: `probe` permits in flight (0: not probing), paced by the
    /// ramp from its start when `adapts`.
    #[must_use]
    pub fn probing(probe: u32, adapts: bool) -> Self {
        Self {
            probe,
            milli: if adapts { RAMP_START_MILLI } else { 0 },
            incr: 0,
            probed: 0,
            window: 0,
            in_window: 0,
            last_window: 0,
            last_seq: 0,
            cut_seq: 0,
            estimate_milli: 0,
            step: Step::Ramp,
        }
    }

    /// What survives a restart: (rate, growth, last step, estimate), all milli-units/s.
    #[must_use]
    pub fn parts(&self) -> (u64, u64, Step, u64) {
        (self.milli, self.incr, self.step, self.estimate_milli)
    }

    /// The state a restart restores: the rate as it was, probing again with `probe` permits
    /// in flight until the upstream answers (its level is unknown after the restart).
    #[must_use]
    pub fn restored(parts: (u64, u64, Step, u64), probe: u32) -> Self {
        let (milli, incr, step, estimate_milli) = parts;
        Self {
            milli,
            incr,
            step,
            estimate_milli,
            ..Self::probing(probe, true)
        }
    }

    /// Whether slow start still limits permits in flight.
    #[must_use]
    pub fn is_probing(&self) -> bool {
        self.probe > 0
    }

    /// A permit `seq` was granted.
    pub fn granted(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Move the one-second windows up to `now`.
    fn roll(&mut self, now: Nanos) {
        let k = now.saturating_sub(self.window) / SEC;
        if k >= 1 {
            self.last_window = if k == 1 { self.in_window } else { 0 };
            self.in_window = 0;
            self.window = self.window.saturating_add(k.saturating_mul(SEC));
        }
    }

    /// Successes over the last second at `now`, milli-units per second (the last window
    /// weighted by how much of it is still within the second).
    fn recent(&mut self, now: Nanos) -> u64 {
        self.roll(now);
        let into = now.saturating_sub(self.window).min(SEC);
        let last = u128::from(self.last_window) * u128::from(SEC - into) / u128::from(SEC);
        (u64::try_from(last).unwrap_or(u64::MAX)).saturating_add(self.in_window) * 1_000
    }

    /// A call succeeded without teaching a limit; `cap_milli`: the configured rate, if any.
    /// Returns true when the adaptive rate changed.
    pub fn succeeded(&mut self, cap_milli: Option<u64>, now: Nanos) -> bool {
        self.roll(now);
        self.in_window = self.in_window.saturating_add(1);
        self.probed_once();
        if self.milli == 0 {
            return false;
        }
        let before = self.milli;
        if self.incr == 0 {
            self.milli = self.milli.saturating_add(1_000);
        } else {
            // +incr per second at saturation, where `milli` successes come per 1 000 s.
            let d = u128::from(self.incr) * 1_000 / u128::from(self.milli.max(1));
            self.milli = self
                .milli
                .saturating_add(u64::try_from(d).unwrap_or(u64::MAX).max(1));
        }
        self.milli = cap(self.milli, cap_milli);
        self.milli != before
    }

    /// A permit was released as used with no outcome reported (ReleasePermit): the call
    /// was made, but nothing says how it went. Counts towards ending slow start, so a fleet
    /// that never reports is not held to the probe. Returns true when probing ended.
    pub fn completed(&mut self) -> bool {
        self.probed_once()
    }

    /// Count one call that went well while probing; true when that ended the probing.
    fn probed_once(&mut self) -> bool {
        if self.probe == 0 {
            return false;
        }
        self.probed = self.probed.saturating_add(1);
        if self.probed < PROBE_SUCCESSES {
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
        let recent = self.recent(now);
        let base = match (self.milli, recent) {
            (0, 0) => RAMP_START_MILLI,
            (0, r) => r,
            // Nothing succeeded lately: only the rate itself says where to go from.
            (m, 0) => m,
            (m, r) => m.min(r),
        };
        self.milli = cap(
            (base / CUT_DEN).saturating_mul(CUT_NUM).max(MIN_MILLI),
            cap_milli,
        );
        self.incr = (self.milli / GROWTH_DIVISOR).max(1);
        self.estimate_milli = recent;
        self.step = Step::Cut;
        self.probe = 0;
        // What succeeds from the cooldown's end on is the next estimate's evidence.
        self.window = resume_at.max(now);
        self.in_window = 0;
        self.last_window = 0;
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

    /// Probing ends after three successes; the ramp paces the probes from 3/s and grows one
    /// unit per second per success, never above the guess.
    #[test]
    fn probe_and_ramp() {
        let mut a = Adaptive::probing(1, true);
        assert_eq!(a.milli, 3_000);
        a.granted(1);
        assert!(a.succeeded(None, SEC) && a.succeeded(None, SEC));
        assert!(a.is_probing());
        a.succeeded(None, SEC);
        assert!(!a.is_probing());
        assert_eq!(a.milli, 6_000);
        a.succeeded(Some(6_500), SEC);
        assert_eq!(a.milli, 6_500, "capped at the guess");
        let mut known = Adaptive::probing(1, false);
        assert!(
            !known.succeeded(None, SEC),
            "no rate where limits are known"
        );
    }

    /// A cut keeps 17/20 of what succeeded over the last second; the 429s of permits in
    /// flight at the cut cut nothing more; growth is 1 % of the cut rate per second after.
    #[test]
    fn cut_once_per_loss_then_grow() {
        let mut a = Adaptive::probing(0, true);
        // 10 successes in the second before t = 2 s, 4 in the one before.
        for i in 0..4 {
            a.succeeded(None, SEC / 2 + i);
        }
        for i in 0..10 {
            a.granted(i);
            a.succeeded(None, SEC + i * 50_000_000);
        }
        let now = 2 * SEC - SEC / 4;
        // 10 in this window, a quarter of the last one's 4 still within the second: 11/s.
        assert!(a.limited(Some(9), None, now, 3 * SEC));
        assert_eq!(
            (a.milli, a.estimate_milli, a.step),
            (9_350, 11_000, Step::Cut)
        );
        assert!(!a.limited(Some(8), None, now, 3 * SEC), "same loss");
        a.succeeded(None, 3 * SEC);
        // +93 milli per second over 9.35 successes per second: 9 per success.
        assert_eq!(a.milli, 9_359);
        a.granted(10);
        assert!(a.limited(Some(10), None, 3 * SEC + 1, 4 * SEC));
        // One success in the second before: 1/s.
        assert_eq!(a.milli, 850);
    }

    /// Repeated losses never take the rate below its floor.
    #[test]
    fn floor() {
        let mut a = Adaptive::probing(0, false);
        for s in 0..100 {
            a.granted(s);
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
