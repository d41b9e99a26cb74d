//! Redis failures, typed, and what a caller is told of them.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A Redis failure, typed; mapped to `UNAVAILABLE` (or the fallback) at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL does not parse.
    #[error("redis url: {0}")]
    Url(#[source] redis::RedisError),
    /// A command failed.
    #[error("redis {op}: {source}")]
    Redis {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A command outlasted the operation timeout.
    #[error("redis {op}: no answer within {timeout:?}")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// A script answered something it never answers.
    #[error("redis {op}: unexpected reply")]
    Reply {
        /// What was being done.
        op: &'static str,
    },
    /// Redis is known to be down (the events subscription is not connected).
    #[error("redis is unreachable")]
    Down,
}

impl ClusterError {
    /// Whether the failure says something about the connection (as opposed to a script
    /// answering something unexpected): the engine then checks whether Redis is down.
    #[must_use]
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Down => true,
            Self::Redis { source, .. } => {
                source.is_io_error() || source.is_timeout() || source.is_connection_dropped()
            }
            Self::Url(_) | Self::Reply { .. } => false,
        }
    }
}

impl From<ClusterError> for PermitError {
    /// Kept as the source, so a log shows the chain down to the Redis client's error.
    fn from(e: ClusterError) -> Self {
        Self::Unavailable(Box::new(e))
    }
}
