//! One rate limit's bucket math: GCRA (the generic cell rate algorithm), exact in integers.
//!
//! A limit grants `amount` units per `period` with a capacity of `burst` units. GCRA keeps a
//! single number, the theoretical arrival time (TAT): the instant at which the bucket would
//! be full again. To stay exact for any amount and period we scale time by `amount`:
//! scaled time `s(t) = t_ns * amount`, one unit of cost is `period_ns` scaled units, and the
//! capacity is `burst * period_ns`. Everything is integer arithmetic in `u128`, so there is
//! no float drift and the property tests can compare against a reference model exactly.
//!
//! Guarantee (tested): over any interval `[t1, t2]` the units granted are at most
//! `burst + (t2 - t1) * amount / period`, with no double burst at a window boundary.

use crate::clock::Nanos;

/// Largest amount a limit may grant per period (keeps `u128` math far from overflow).
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;
/// Longest period: 366 days.
pub const MAX_PERIOD_NS: u64 = 366 * 24 * 3600 * 1_000_000_000;
/// Shortest period: 1 ms.
pub const MIN_PERIOD_NS: u64 = 1_000_000;

/// The shape of a limit: `amount` units per `period_ns`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per period (1..=[`MAX_AMOUNT`]).
    pub amount: u64,
    /// Period in nanoseconds ([`MIN_PERIOD_NS`]..=[`MAX_PERIOD_NS`]).
    pub period_ns: u64,
    /// Capacity (1..=[`MAX_AMOUNT`]).
    pub burst: u64,
}

impl Rate {
    /// Units per second (for display and the adaptive rate's arithmetic).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn per_second(&self) -> f64 {
        self.amount as f64 * 1e9 / self.period_ns as f64
    }
}

/// A limit's live state.
#[derive(Debug, Clone)]
pub struct LimitState {
    rate: Rate,
    /// Theoretical arrival time in scaled units; `<= s(now)` means the bucket is full.
    /// A `u128` (scaled time needs more than 64 bits to stay exact) kept as bytes: a `u128`
    /// field would align the state to 16 and pad it from 40 to 48 bytes, in every bucket.
    tat: [u8; 16],
}

impl LimitState {
    /// A full bucket.
    #[must_use]
    pub fn new(rate: Rate) -> Self {
        Self { rate, tat: [0; 16] }
    }

    fn tat(&self) -> u128 {
        u128::from_ne_bytes(self.tat)
    }

    fn set_tat(&mut self, tat: u128) {
        self.tat = tat.to_ne_bytes();
    }

    /// The limit's shape.
    #[must_use]
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn scaled(&self, now: Nanos) -> u128 {
        u128::from(now) * u128::from(self.rate.amount)
    }

    fn unit(&self) -> u128 {
        u128::from(self.rate.period_ns)
    }

    fn capacity(&self) -> u128 {
        u128::from(self.rate.burst) * self.unit()
    }

    /// Units that could be taken at `now`.
    #[must_use]
    pub fn available(&self, now: Nanos) -> u64 {
        let s = self.scaled(now);
        let used = self.tat().saturating_sub(s);
        let free = self.capacity().saturating_sub(used) / self.unit();
        u64::try_from(free).unwrap_or(u64::MAX)
    }

    /// Nanoseconds from `now` until `cost` units fit: `Some(0)` when they fit now, `None`
    /// when they never can (`cost > burst`).
    #[must_use]
    pub fn wait_for(&self, cost: u64, now: Nanos) -> Option<Nanos> {
        if cost > self.rate.burst {
            return None;
        }
        Some(self.ready_in(cost, now))
    }

    /// Nanoseconds from `now` until `cost` units have accumulated, even when `cost` is above
    /// the burst (then it is the time for that much refill: a queue-wide estimate).
    #[must_use]
    pub fn ready_in(&self, cost: u64, now: Nanos) -> Nanos {
        let s = self.scaled(now);
        // Fits when max(tat, s) + cost*unit - s <= capacity, i.e. s >= tat + cost*unit - cap.
        let need = (self.tat().saturating_add(u128::from(cost) * self.unit()))
            .saturating_sub(self.capacity());
        if need <= s {
            return 0;
        }
        let at = need.div_ceil(u128::from(self.rate.amount));
        u64::try_from(at).unwrap_or(u64::MAX).saturating_sub(now)
    }

    /// Change the shape, keeping the units available now (at most the new burst): a limit
    /// re-rated as evidence moves must not hand out a fresh burst each time.
    pub fn rerate(&mut self, rate: Rate, now: Nanos) {
        let available = self.available(now).min(rate.burst);
        *self = Self::new(rate);
        let used = u128::from(rate.burst - available) * self.unit();
        self.set_tat(self.scaled(now) + used);
    }

    /// Make sure one unit is available at `at` (a probe's slot), leaving the rest as is.
    pub fn allow_one_at(&mut self, at: Nanos) {
        let ceiling = (self.scaled(at) + self.capacity()).saturating_sub(self.unit());
        self.set_tat(self.tat().min(ceiling));
    }

    /// Take `cost` units (the caller checked [`Self::wait_for`]).
    pub fn take(&mut self, cost: u64, now: Nanos) {
        let base = self.tat().max(self.scaled(now));
        self.set_tat(base.saturating_add(u128::from(cost) * self.unit()));
    }

    /// Charge units already used upstream (a reconciled cost, or a call made without a
    /// permit). The bucket may go into debt, but by at most one full burst: an absurd report
    /// must not lock a resource out for years, and an upstream's own window forgets too.
    pub fn charge(&mut self, cost: u64, now: Nanos) {
        self.take(cost, now);
        let ceiling = self.scaled(now).saturating_add(2 * self.capacity());
        self.set_tat(self.tat().min(ceiling));
    }

    /// Give `cost` units back (a refund); never fuller than full.
    pub fn refund(&mut self, cost: u64) {
        self.set_tat(self.tat().saturating_sub(u128::from(cost) * self.unit()));
    }

    /// Lower the level to `remaining` units if it is higher (an upstream said so); never
    /// raises it.
    pub fn correct_down(&mut self, remaining: u64, now: Nanos) {
        let s = self.scaled(now);
        let used = u128::from(self.rate.burst.saturating_sub(remaining)) * self.unit();
        self.set_tat(self.tat().max(s + used));
    }

    /// [`Self::correct_down`] for a count the upstream made at an unknown instant between
    /// `earliest` (its call's grant) and `now` (the report). When the bucket is already
    /// that low as of `earliest`, the reading fits it and it stays; charging from the
    /// report instead would add the call's round trip to every unit, which a burst of one
    /// cannot make up. A reading no instant explains is applied as of `now`. Returns
    /// whether it was.
    pub fn correct_since(&mut self, remaining: u64, earliest: Nanos, now: Nanos) -> bool {
        let used = u128::from(self.rate.burst.saturating_sub(remaining)) * self.unit();
        if self.tat() >= self.scaled(earliest.min(now)) + used {
            return false;
        }
        self.correct_down(remaining, now);
        true
    }

    /// The instant the bucket is full again.
    #[must_use]
    pub fn full_at(&self) -> Nanos {
        let at = self.tat().div_ceil(u128::from(self.rate.amount));
        u64::try_from(at).unwrap_or(u64::MAX)
    }

    /// Whether the bucket is full at `now` (an idle bucket can be dropped and recreated).
    #[must_use]
    pub fn is_full(&self, now: Nanos) -> bool {
        self.tat() <= self.scaled(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    fn rate(amount: u64, period_ns: u64, burst: u64) -> Rate {
        Rate {
            amount,
            period_ns,
            burst,
        }
    }

    /// 20 per minute: twenty grants with remaining 19..0, then a wait of exactly 3 s.
    #[test]
    fn twenty_per_minute_sequential() {
        let mut l = LimitState::new(rate(20, 60 * SEC, 20));
        for i in 0..20u64 {
            assert_eq!(l.wait_for(1, 0), Some(0));
            l.take(1, 0);
            assert_eq!(l.available(0), 19 - i);
        }
        assert_eq!(l.wait_for(1, 0), Some(3 * SEC));
        assert_eq!(l.wait_for(1, 3 * SEC - 1), Some(1));
        assert_eq!(l.wait_for(1, 3 * SEC), Some(0));
        assert_eq!(l.wait_for(2, 3 * SEC), Some(3 * SEC));
        assert_eq!(l.full_at(), 60 * SEC);
    }

    /// A cost above the burst can never be granted.
    #[test]
    fn cost_above_burst_is_never() {
        let l = LimitState::new(rate(10, SEC, 5));
        assert_eq!(l.wait_for(6, 0), None);
        assert_eq!(l.wait_for(5, 0), Some(0));
    }

    /// Refunds restore units but never overfill; charges can put the bucket in debt.
    #[test]
    fn refund_and_charge() {
        let mut l = LimitState::new(rate(10, SEC, 10));
        l.take(4, 0);
        assert_eq!(l.available(0), 6);
        l.refund(10);
        assert_eq!(l.available(0), 10);
        l.take(25, 0);
        assert_eq!(l.available(0), 0);
        // 15 units of debt plus 1 unit: 1.6 s.
        assert_eq!(l.wait_for(1, 0), Some(1_600_000_000));
    }

    /// A charge may leave the bucket in debt, but by one burst at most.
    #[test]
    fn charge_debt_is_capped() {
        let mut l = LimitState::new(rate(10, SEC, 10));
        l.charge(u64::MAX, 0);
        assert_eq!(l.available(0), 0);
        // Full again after two bursts' refill (2 s), not after centuries.
        assert_eq!(l.full_at(), 2 * SEC);
        assert_eq!(l.wait_for(1, 0), Some(1_100_000_000));
    }

    /// correct_down lowers the level and never raises it.
    #[test]
    fn correct_down_only_lowers() {
        let mut l = LimitState::new(rate(100, SEC, 100));
        l.correct_down(30, 0);
        assert_eq!(l.available(0), 30);
        l.correct_down(90, 0);
        assert_eq!(l.available(0), 30);
    }

    /// A count the bucket already explains as of the call's grant leaves it; one it does
    /// not is applied as of the report.
    #[test]
    fn correct_since_keeps_a_bucket_the_reading_fits() {
        // 1 per 100 ms, burst 1: granted at 0, reported at 5 ms with 0 remaining.
        let mut l = LimitState::new(rate(1, SEC / 10, 1));
        l.take(1, 0);
        assert!(!l.correct_since(0, 0, 5_000_000));
        assert_eq!(l.full_at(), SEC / 10);
        // Another consumer took the unit back at 100 ms: at 150 ms (granted at 120 ms)
        // the upstream still says 0 where the bucket had one.
        assert!(l.correct_since(0, 120_000_000, 150_000_000));
        assert_eq!(l.full_at(), 250_000_000);
        // No grant instant known (earliest = now): the old correction.
        let mut m = LimitState::new(rate(100, SEC, 100));
        assert!(m.correct_since(30, 0, 0));
        assert_eq!(m.available(0), 30);
        assert!(!m.correct_since(90, 0, 0));
    }

    /// The extreme shapes stay exact and never overflow.
    #[test]
    fn extremes_do_not_overflow() {
        let mut l = LimitState::new(rate(MAX_AMOUNT, MAX_PERIOD_NS, MAX_AMOUNT));
        let late = u64::MAX / 2;
        l.take(MAX_AMOUNT, late);
        assert_eq!(l.available(late), 0);
        assert!(l.wait_for(1, late).is_some_and(|w| w > 0));
        let mut tiny = LimitState::new(rate(1, MIN_PERIOD_NS, 1));
        tiny.take(1, late);
        assert_eq!(tiny.wait_for(1, late), Some(MIN_PERIOD_NS));
    }

    /// A plain token bucket with exact rational tokens (scaled by period), written
    /// independently of the GCRA formulation.
    struct Reference {
        amount: u128,
        period: u128,
        burst: u128,
        tokens: u128, // tokens * period
        last: u64,
    }

    impl Reference {
        fn new(r: Rate) -> Self {
            let period = u128::from(r.period_ns);
            Self {
                amount: u128::from(r.amount),
                period,
                burst: u128::from(r.burst),
                tokens: u128::from(r.burst) * period,
                last: 0,
            }
        }
        fn refill(&mut self, now: u64) {
            let dt = u128::from(now - self.last);
            self.tokens = (self.tokens + dt * self.amount).min(self.burst * self.period);
            self.last = now;
        }
        fn try_take(&mut self, cost: u64, now: u64) -> bool {
            self.refill(now);
            let need = u128::from(cost) * self.period;
            if need <= self.tokens {
                self.tokens -= need;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        /// GCRA makes the same decisions as the reference token bucket on random schedules,
        /// including cost 0, costs above the burst and huge costs.
        #[test]
        fn matches_reference_model(
            amount in 1u64..1000,
            period_ms in 1u64..5000,
            burst_extra in 0u64..50,
            steps in proptest::collection::vec((0u64..3_000_000_000, prop_oneof![
                4 => 0u64..5,
                2 => 0u64..100,
                1 => Just(u64::MAX / 4),
            ]), 1..200),
        ) {
            let r = rate(amount, period_ms * 1_000_000, amount + burst_extra);
            let mut g = LimitState::new(r);
            let mut m = Reference::new(r);
            let mut now = 0u64;
            for (dt, cost) in steps {
                now += dt;
                let fits = g.wait_for(cost, now) == Some(0);
                if fits { g.take(cost, now); }
                prop_assert_eq!(fits, m.try_take(cost, now), "now={} cost={}", now, cost);
                m.refill(now);
                prop_assert_eq!(u128::from(g.available(now)), m.tokens / m.period);
            }
        }

        /// Whatever the schedule, grants in any interval stay within burst + rate * length,
        /// and a positive wait_for is exact: one nanosecond earlier does not fit.
        #[test]
        fn envelope_and_exact_wait(
            amount in 1u64..100,
            period_ms in 1u64..1000,
            burst in 1u64..100,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..300),
        ) {
            let r = rate(amount, period_ms * 1_000_000, burst);
            let mut g = LimitState::new(r);
            let mut grants: Vec<u64> = Vec::new();
            let mut now = 0u64;
            for gap in gaps {
                now += gap;
                match g.wait_for(1, now) {
                    Some(0) => { g.take(1, now); grants.push(now); }
                    Some(w) => {
                        prop_assert_eq!(g.wait_for(1, now + w), Some(0));
                        prop_assert!(g.wait_for(1, now + w - 1).is_some_and(|x| x > 0));
                    }
                    None => prop_assert!(false, "cost 1 <= burst must be grantable"),
                }
            }
            for i in 0..grants.len() {
                for j in i..grants.len() {
                    let n = u128::try_from(j - i + 1).unwrap();
                    let span = u128::from(grants[j] - grants[i]);
                    // n <= burst + span * amount / period, in integers.
                    prop_assert!(
                        n * u128::from(r.period_ns)
                            <= u128::from(burst) * u128::from(r.period_ns) + span * u128::from(amount)
                    );
                }
            }
        }
    }
}
