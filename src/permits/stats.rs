//! Per-resource counters for metrics: monotonic, lock-free (one relaxed atomic add on the
//! permit path), kept per resource rather than per bucket so they survive idle partition
//! buckets being dropped and partitions never become metric labels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::denial::DenialReason;

/// Upper bounds (seconds) of the queue-wait histogram buckets.
pub const WAIT_BOUNDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Denial reasons in a fixed order (metric label values).
pub const REASONS: [(DenialReason, &str); 5] = [
    (DenialReason::RateLimited, "rate_limited"),
    (DenialReason::ConcurrencyLimited, "concurrency_limited"),
    (DenialReason::Cooldown, "cooldown"),
    (DenialReason::QueueTimeout, "queue_timeout"),
    (DenialReason::QueueFull, "queue_full"),
];

/// Upstream status classes (metric label values).
pub const STATUS_CLASSES: [&str; 6] = ["none", "2xx", "3xx", "4xx", "429", "5xx"];

/// A cumulative histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Count per bucket of [`WAIT_BOUNDS`] (not cumulative), plus one for +Inf.
    pub buckets: [AtomicU64; 13],
    /// Sum of observations in microseconds.
    pub sum_us: AtomicU64,
    /// Observations.
    pub count: AtomicU64,
}

impl Histogram {
    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = WAIT_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(WAIT_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one resource.
#[derive(Debug, Default)]
pub struct ResourceStats {
    /// Permits granted.
    pub granted: AtomicU64,
    /// Denials, indexed like [`REASONS`].
    pub denied: [AtomicU64; 5],
    /// Time granted waiters spent queued.
    pub queue_wait: Histogram,
    /// Upstream answers reported, indexed like [`STATUS_CLASSES`].
    pub upstream: [AtomicU64; 6],
}

impl ResourceStats {
    /// Count a grant (and its queue wait, if it queued).
    pub fn granted(&self, waited: Option<Duration>) {
        self.granted.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = waited {
            self.queue_wait.observe(w);
        }
    }

    /// Count a denial.
    pub fn denied(&self, reason: DenialReason) {
        if let Some(i) = REASONS.iter().position(|(r, _)| *r == reason) {
            self.denied[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count an upstream answer by class.
    pub fn upstream(&self, status: u32) {
        let i = match status {
            0 => 0,
            429 => 4,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 5,
        };
        self.upstream[i].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Observations land in the right bucket; classes and reasons are counted.
    #[test]
    fn counts() {
        let s = ResourceStats::default();
        s.granted(Some(Duration::from_millis(3)));
        s.granted(Some(Duration::from_secs(60)));
        s.granted(None);
        s.denied(DenialReason::QueueFull);
        s.upstream(429);
        s.upstream(201);
        s.upstream(0);
        assert_eq!(s.granted.load(Ordering::Relaxed), 3);
        assert_eq!(s.queue_wait.buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(s.queue_wait.buckets[12].load(Ordering::Relaxed), 1);
        assert_eq!(s.queue_wait.count.load(Ordering::Relaxed), 2);
        assert_eq!(s.denied[4].load(Ordering::Relaxed), 1);
        assert_eq!(
            s.upstream
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect::<Vec<_>>(),
            [1, 1, 0, 0, 1, 0]
        );
    }
}
