//! Validated resource definitions: what the registry enforces.
//!
//! A [`ResourceDef`] is only built from checked input (the server's conversion from the
//! proto, used for both the API and the config file), so the rest of the domain can rely on
//! its invariants: names in the alphabet, every limit's rate in range, dimensions resolved
//! to small indexes so the permit path never hashes a dimension name.

use std::time::Duration;

use super::limit::Rate;

/// The dimension every permit costs 1 of unless it says otherwise.
pub const REQUESTS: &str = "requests";
/// Longest resource or partition name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest dimension name, in bytes.
pub const MAX_DIMENSION_LEN: usize = 64;
/// Most limits one resource may have.
pub const MAX_LIMITS: usize = 16;
/// Most dimensions one resource may have.
pub const MAX_DIMENSIONS: usize = 16;
/// Most permits in flight a slow start may allow.
pub const MAX_PROBE_CONCURRENCY: u32 = 1000;
/// Queue length used when a resource says 0.
pub const DEFAULT_MAX_QUEUE: u32 = 1000;
/// Lease used when a resource says nothing.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Shortest lease.
pub const MIN_LEASE: Duration = Duration::from_millis(1);
/// Longest lease.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Why a name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty where a name is required.
    #[error("must not be empty")]
    Empty,
    /// Too long.
    #[error("is {len} bytes, at most {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte outside `[A-Za-z0-9._:/@-]`.
    #[error("has {found:?} at byte {at}: only [A-Za-z0-9._:/@-] allowed")]
    BadChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Check a resource, partition or dimension name: `[A-Za-z0-9._:/@-]`, `min..=max` bytes.
pub fn check_name(s: &str, required: bool, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return if required {
            Err(NameError::Empty)
        } else {
            Ok(())
        };
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    match s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "._:/@-".contains(*c)))
    {
        Some((at, found)) => Err(NameError::BadChar { found, at }),
        None => Ok(()),
    }
}

/// Whether a limit has one bucket per partition or one for the whole resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One bucket for the whole resource.
    Resource,
    /// One bucket per partition.
    Partition,
}

/// Where a limit's figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The resource definition.
    Config,
    /// Upstream headers.
    Learned,
    /// The adaptive rate of an upstream that sends no rate-limit headers.
    Adaptive,
}

/// One validated limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitDef {
    /// Index into [`ResourceDef::dimensions`].
    pub dimension: usize,
    /// The rate.
    pub rate: Rate,
    /// Where it applies (resolved: never "unspecified").
    pub scope: Scope,
    /// Whether the scope was given explicitly (kept so the definition round-trips).
    pub scope_explicit: bool,
    /// Where it came from.
    pub origin: Origin,
}

/// Retry delay formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// base * multiplier^(attempt-1), capped.
    Exponential,
    /// Uniform in [0, exponential].
    FullJitter,
    /// Half exponential plus uniform jitter over the other half.
    EqualJitter,
    /// Uniform in [base, previous * 3], capped.
    DecorrelatedJitter,
}

/// A resource's retry policy, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffDef {
    /// The formula.
    pub kind: BackoffKind,
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Cap on an upstream's Retry-After.
    pub max_retry_after: Duration,
}

impl Default for BackoffDef {
    fn default() -> Self {
        Self {
            kind: BackoffKind::FullJitter,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            max_attempts: 6,
            max_retry_after: Duration::from_secs(15 * 60),
        }
    }
}

/// What a cluster replica does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Answer `UNAVAILABLE` within the operation timeout.
    FailClosed,
    /// Grant a share of each limit locally until Redis returns.
    LocalFallback,
}

/// A validated resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    /// Its name.
    pub name: String,
    /// Every dimension a cost may name; index 0 is always `requests`.
    pub dimensions: Vec<String>,
    /// Dimensions declared without a limit (kept so the definition round-trips).
    pub declared_dimensions: Vec<String>,
    /// Rate limits.
    pub limits: Vec<LimitDef>,
    /// Permits in flight at once; 0 = unlimited.
    pub concurrency: u32,
    /// Default lease of a permit.
    pub lease: Duration,
    /// Whether concurrency, the queue and unscoped limits apply per partition. Limits scoped
    /// to partitions require it; resource-scoped limits of a per-partition resource form a
    /// secondary bucket shared by all partitions ("both").
    pub per_partition: bool,
    /// Retry policy.
    pub backoff: BackoffDef,
    /// Waiters per bucket.
    pub max_queue: u32,
    /// Whether headers may teach limits.
    pub learn_from_headers: bool,
    /// This resource's failure policy in a cluster; `None`: the server's.
    pub failure_policy: Option<FailurePolicy>,
    /// Whether the configured limits are the upstream's real ones (not a guess).
    pub limits_known: bool,
    /// Slow start: permits in flight while the limits are unconfirmed (0 = off).
    pub probe_concurrency: u32,
    /// Whether workers may report outcomes without a permit (admins always may).
    pub accept_feedback_without_permit: bool,
}

impl ResourceDef {
    /// Index of a dimension name.
    #[must_use]
    pub fn dimension_index(&self, name: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d == name)
    }

    /// The scope of the bucket that holds concurrency and the queue.
    #[must_use]
    pub fn home_scope(&self) -> Scope {
        if self.per_partition {
            Scope::Partition
        } else {
            Scope::Resource
        }
    }

    /// Whether the adaptive machinery (slow start's header-less ramp, AIMD on 429s without
    /// headers) may run: only while the limits are a guess.
    #[must_use]
    pub fn adapts(&self) -> bool {
        !self.limits_known
    }

    /// The configured rate of `dimension` in units per second (the tightest), if any.
    #[must_use]
    pub fn configured_per_second(&self, dimension: usize) -> Option<f64> {
        self.limits
            .iter()
            .filter(|l| l.dimension == dimension && l.origin == Origin::Config)
            .map(|l| l.rate.per_second())
            .min_by(f64::total_cmp)
    }

    /// The largest cost of `dimension` any limit could ever grant (`None`: unlimited).
    #[must_use]
    pub fn max_grantable(&self, dimension: usize) -> Option<u64> {
        self.limits
            .iter()
            .filter(|l| l.dimension == dimension)
            .map(|l| l.rate.burst)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names follow the contract's alphabet and length.
    #[test]
    fn names() {
        assert_eq!(check_name("openai:gpt-4o", true, 200), Ok(()));
        assert_eq!(check_name("a/b@c.d_e-f:9", true, 200), Ok(()));
        assert_eq!(check_name("", true, 200), Err(NameError::Empty));
        assert_eq!(check_name("", false, 200), Ok(()));
        assert_eq!(
            check_name(&"x".repeat(201), true, 200),
            Err(NameError::TooLong { len: 201, max: 200 })
        );
        assert_eq!(
            check_name("a b", true, 200),
            Err(NameError::BadChar { found: ' ', at: 1 })
        );
        assert_eq!(
            check_name("é", true, 200),
            Err(NameError::BadChar { found: 'é', at: 0 })
        );
    }
}
