//! The `[redis]` settings, and the retry pacing of start-up and reconnection.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Longest a queued caller sleeps before it re-checks without being woken.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Longest pause between reconnection attempts (a replica is back within this of Redis).
pub(super) const RECONNECT_MAX: Duration = Duration::from_millis(250);

/// Doubling pauses between attempts to reach Redis, from `first` up to `max`: start-up
/// waits and reconnections share it.
#[derive(Debug)]
pub struct Retry {
    first: Duration,
    delay: Duration,
    max: Duration,
}

impl Retry {
    /// Pauses of `first`, doubling up to `max`.
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            delay: first,
            max,
        }
    }

    /// The pause before the next attempt (what `wait` will sleep).
    #[must_use]
    pub fn next(&self) -> Duration {
        self.delay
    }

    /// Sleep the current pause, then double it.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.max);
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.delay = self.first;
    }
}

/// Start-up waits for Redis: 100 ms doubling to 500 ms, so a replica serves within half a
/// second of its Redis coming up.
#[must_use]
pub fn startup_retry() -> Retry {
    Retry::new(Duration::from_millis(100), Duration::from_millis(500))
}

/// The `[redis]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `redis://[user:pass@]host:port[/db]` (`rediss://` for TLS), or several
    /// comma-separated seed nodes of a Redis Cluster.
    pub url: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub prefix: String,
    /// Longest one Redis operation may take before it counts as failed.
    pub op_timeout: Duration,
    /// What happens while Redis is unreachable.
    pub policy: FailurePolicy,
    /// With local fallback, each replica grants `1 / fallback_share` of every limit.
    pub fallback_share: u32,
    /// How often every definition is read again from Redis (a lost change message must
    /// not leave replicas apart for long).
    pub resync_every: Duration,
    /// Certificates for `rediss://` URLs (a private CA, a client certificate).
    pub tls: RedisTls,
}

impl Settings {
    /// The seed URLs: one for a single Redis, several (comma separated) for a Redis Cluster.
    #[must_use]
    pub fn seeds(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: String::new(),
            prefix: "permitd:".to_owned(),
            op_timeout: Duration::from_millis(250),
            policy: FailurePolicy::FailClosed,
            fallback_share: 1,
            resync_every: Duration::from_secs(30),
            tls: RedisTls::default(),
        }
    }
}

/// The URL without its password, for logs.
#[must_use]
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***@{}", &u[..s], &u[at + 1..]),
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
