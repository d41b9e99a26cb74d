//! Why a permit was denied: the one piece the answers and the statistics both name, kept
//! below both so neither imports the other.

/// Why a permit was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// A rate limit has no room.
    RateLimited,
    /// The concurrency limit is reached.
    ConcurrencyLimited,
    /// The resource is paused after an upstream 429.
    Cooldown,
    /// Waited `max_wait` without a grant.
    QueueTimeout,
    /// The queue is full.
    QueueFull,
}
