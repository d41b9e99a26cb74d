//! What a report decided, recorded for the feedback script, and the local-fallback share.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What a report decided, recorded for the feedback script.
#[derive(Debug)]
pub struct Effects {
    pub(super) now: Nanos,
    pub(super) cooldown: Option<Nanos>,
    pub(super) is_429: bool,
    /// (dimension, rate, whether the upstream stated the window).
    pub(super) learned: Vec<(usize, Rate, bool)>,
    pub(super) blocks: Vec<(usize, Nanos)>,
    pub(super) corrections: Vec<(usize, Option<Nanos>, u64)>,
}

impl Effects {
    pub(super) fn new(now: Nanos) -> Self {
        Self {
            now,
            cooldown: None,
            is_429: false,
            learned: Vec::new(),
            blocks: Vec::new(),
            corrections: Vec::new(),
        }
    }
}

impl Target for Effects {
    fn count_429(&mut self) {
        self.is_429 = true;
    }
    fn cool_down(&mut self, until: Nanos) {
        self.cooldown = Some(self.cooldown.map_or(until, |c| c.max(until)));
    }
    fn learn(&mut self, dimension: usize, rate: Rate, basis: Basis, _now: Nanos) -> bool {
        // A rate the scripts cannot hold exactly is not kept (a configured one is refused
        // at PutResource): the configured limits still bind.
        if !exact_in_lua(rate) {
            tracing::debug!(
                ?rate,
                "learned rate too fine for the scripts' integers; not kept"
            );
            return false;
        }
        self.learned
            .push((dimension, rate, basis == Basis::StatedWindow));
        true
    }
    // Slow start, the adaptive rate and guesses giving way to learned limits are the
    // embedded engine's for now: the cluster keeps learned limits beside the configured
    // ones, windows fitted per report (issue 15 makes both engines one contract).
    fn fit(&self, _dimension: usize) -> Option<Fit> {
        None
    }
    fn set_fit(&mut self, _dimension: usize, _fit: Fit) {}
    fn drop_guess(&mut self, _dimension: usize) -> bool {
        false
    }
    fn confirm(&mut self) {}
    fn refilled(&self, _dimension: usize) -> Refilled {
        // A window's end is a window's end here: no probing before it.
        Refilled::AtReset
    }
    fn arm_refill_probe(&mut self, _dimension: usize, _probe_at: Nanos, _reset_at: Nanos) {}
    fn observe_refill(&mut self, _dimension: usize, _status: u32, _seq: Option<u64>, _now: Nanos) {}
    fn succeeded_blind(&mut self, _cap: Option<f64>, _adapts: bool, _now: Nanos) {}
    fn limited_blind(
        &mut self,
        _seq: Option<u64>,
        _cap: Option<f64>,
        _now: Nanos,
        _resume_at: Nanos,
    ) -> bool {
        false
    }
    fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        _earliest: Nanos,
        _now: Nanos,
    ) -> bool {
        // Applied in Redis as of the report (the engine does not know the grant, #15).
        self.corrections.push((dimension, window_ns, remaining));
        true
    }
    fn block_dimension(&mut self, dimension: usize, until: Nanos) {
        self.blocks.push((dimension, until));
    }
    fn cooldown_until(&self) -> Nanos {
        self.cooldown.filter(|&c| c > self.now).unwrap_or(0)
    }
}

/// A definition for the local-fallback registry: every limit (and the concurrency) divided
/// by the number of replicas sharing it, at least 1.
#[must_use]
pub fn fallback_share(def: &ResourceDef, share: u32) -> ResourceDef {
    let n = u64::from(share.max(1));
    let mut d = def.clone();
    for l in &mut d.limits {
        l.rate.amount = (l.rate.amount / n).max(1);
        l.rate.burst = (l.rate.burst / n).max(1);
    }
    if d.concurrency > 0 {
        d.concurrency = (d.concurrency / share.max(1)).max(1);
    }
    d
}
