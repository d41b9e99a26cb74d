//! Time for the domain: a monotonic nanosecond count since the clock's epoch, plus the wall
//! time of that epoch so answers can carry timestamps.
//!
//! The domain never reads the wall clock itself. Bucket math takes a `Nanos` argument;
//! the registry asks its [`Clock`]. Tests use [`ManualClock`] and are exact. Wall time is
//! derived from the monotonic count (epoch wall time + offset), so a wall-clock step (NTP)
//! can neither refill nor drain a bucket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Nanoseconds since the clock's epoch.
pub type Nanos = u64;

/// A source of monotonic time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Nanoseconds since the epoch; never goes backwards.
    fn now(&self) -> Nanos;
    /// Wall time of the epoch (`now() == 0`).
    fn epoch_wall(&self) -> SystemTime;
    /// The tokio-compatible instant of the epoch, for timers.
    fn epoch_instant(&self) -> Instant;

    /// Wall time of a monotonic instant.
    fn wall(&self, at: Nanos) -> SystemTime {
        self.epoch_wall() + Duration::from_nanos(at)
    }
    /// The std instant of a monotonic instant (for `tokio::time::sleep_until`).
    fn instant(&self, at: Nanos) -> Instant {
        self.epoch_instant() + Duration::from_nanos(at)
    }
}

/// The real clock: `Instant` for the count, `SystemTime` read once at start for the epoch.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
    start_wall: SystemTime,
}

impl SystemClock {
    /// A clock whose epoch is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_wall: SystemTime::now(),
        }
    }
}

impl SystemClock {
    /// A clock whose wall time at `start` was `wall` (read from elsewhere, such as Redis
    /// `TIME`), so every replica anchored the same way reports the same wall time.
    #[must_use]
    pub fn anchored(start: Instant, wall: SystemTime) -> Self {
        Self {
            start,
            start_wall: wall,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        // u64 nanoseconds last 584 years; saturate rather than wrap.
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    fn epoch_wall(&self) -> SystemTime {
        self.start_wall
    }
    fn epoch_instant(&self) -> Instant {
        self.start
    }
}

/// A clock that moves only when told to; for exact tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
    start: Instant,
}

impl ManualClock {
    /// A clock at 0.
    #[must_use]
    pub fn new() -> Self {
        Self {
            now: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
        }
    }
    /// Move forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
    /// Jump to an instant (never backwards).
    pub fn set(&self, at: Nanos) {
        self.now.fetch_max(at, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }
    fn epoch_wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
    fn epoch_instant(&self) -> Instant {
        self.start
    }
}

/// Saturating conversion of a `Duration` to nanoseconds.
#[must_use]
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch at the clock's current instant: the time base of
/// records that outlive the process (idempotency records, cache entries), where a count
/// since this process's start would mean nothing after a restart.
#[must_use]
pub fn unix_ms(clock: &dyn Clock) -> u64 {
    clock
        .wall(clock.now())
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall time of a Unix-millisecond instant (for timestamps in answers).
#[must_use]
pub fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Whole milliseconds of a duration, rounded up (so a TTL under 1 ms is not zero) and
/// saturating.
#[must_use]
pub fn ceil_ms(d: Duration) -> u64 {
    let whole = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    whole.saturating_add(u64::from(!d.subsec_nanos().is_multiple_of(1_000_000)))
}
