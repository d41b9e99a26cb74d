//! The expiry sweeper: removes expired idempotency records and cache entries in the
//! background, in bounded batches.
//!
//! sled has no TTL, so expiry is ours. Reads already treat an expired item as absent; the
//! sweeper only reclaims the space. Each batch examines at most a configured number of
//! items in one `spawn_blocking` call, and a tick runs at most [`MAX_BATCHES_PER_TICK`]
//! batches, yielding between them, so a backlog (a restart after a long stop) never
//! produces a long pause: it drains over a few ticks. Domain modules implement [`Sweep`];
//! this module owns only the schedule.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::{Clock, unix_ms};
use crate::store::StoreError;

/// Batches one tick may run before it waits for the next tick.
pub const MAX_BATCHES_PER_TICK: usize = 16;

/// What one sweep batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Items examined.
    pub examined: usize,
    /// Items removed (expired or damaged).
    pub removed: u64,
    /// Whether this batch reached the end (the next one starts a new pass).
    pub done: bool,
}

/// Something with expiring items to sweep.
pub trait Sweep: Send + Sync + 'static {
    /// For logs.
    fn name(&self) -> &'static str;

    /// Sweeps one bounded batch at `now_ms` (Unix ms). Blocking: called in
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// The store failed; the sweeper logs it and tries again next tick.
    fn sweep_batch(&self, now_ms: u64) -> Result<SweepReport, StoreError>;
}

/// Starts sweeping `target` every `interval` on the current runtime. Abort the handle (and
/// await it) to stop.
pub fn spawn(interval: Duration, clock: Arc<dyn Clock>, target: Arc<dyn Sweep>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let removed = run_tick(clock.as_ref(), &target).await;
            if removed > 0 {
                tracing::debug!(sweeper = target.name(), removed, "swept expired items");
            }
        }
    })
}

/// One tick: batches until a pass ends, an error, or [`MAX_BATCHES_PER_TICK`]; returns
/// how many items were removed.
pub async fn run_tick(clock: &dyn Clock, target: &Arc<dyn Sweep>) -> u64 {
    let mut removed = 0u64;
    for _ in 0..MAX_BATCHES_PER_TICK {
        let now = unix_ms(clock);
        let t = Arc::clone(target);
        match tokio::task::spawn_blocking(move || t.sweep_batch(now)).await {
            Ok(Ok(report)) => {
                removed = removed.saturating_add(report.removed);
                if report.done {
                    break;
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(sweeper = target.name(), error = %error, "sweep failed; retrying next tick");
                break;
            }
            Err(error) => {
                tracing::error!(sweeper = target.name(), error = %error, "sweep task failed");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;

    /// A target with `pending` items, removing `per_batch` per batch.
    struct Backlog {
        pending: Mutex<u64>,
        per_batch: u64,
        batches: Mutex<Vec<u64>>,
    }

    impl Sweep for Backlog {
        fn name(&self) -> &'static str {
            "test"
        }
        fn sweep_batch(&self, _now_ms: u64) -> Result<SweepReport, StoreError> {
            let mut p = self.pending.lock().unwrap();
            let removed = self.per_batch.min(*p);
            *p -= removed;
            self.batches.lock().unwrap().push(removed);
            Ok(SweepReport {
                examined: usize::try_from(removed).unwrap(),
                removed,
                done: removed < self.per_batch,
            })
        }
    }

    /// Proves a tick runs at most MAX_BATCHES_PER_TICK batches and a backlog drains over
    /// the following ticks.
    #[tokio::test]
    async fn backlog_drains_over_several_bounded_ticks() {
        let backlog = Arc::new(Backlog {
            pending: Mutex::new(40),
            per_batch: 2,
            batches: Mutex::new(Vec::new()),
        });
        let target: Arc<dyn Sweep> = backlog.clone();
        let clock = ManualClock::new();
        assert_eq!(run_tick(&clock, &target).await, 32);
        assert_eq!(backlog.batches.lock().unwrap().len(), MAX_BATCHES_PER_TICK);
        assert_eq!(*backlog.pending.lock().unwrap(), 8);
        assert_eq!(run_tick(&clock, &target).await, 8);
        // 4 full batches drained the rest, a 5th found nothing and ended the pass.
        assert_eq!(backlog.batches.lock().unwrap().len(), 16 + 5);
        assert_eq!(run_tick(&clock, &target).await, 0);
        assert_eq!(backlog.batches.lock().unwrap().len(), 16 + 5 + 1);
    }
}
