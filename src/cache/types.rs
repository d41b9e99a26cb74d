//! The cache API's vocabulary: limits, settings, errors and answers, and the input checks.
//! Split from the cache's runner so each file holds one concept.

use std::time::Duration;

use crate::store::StoreError;
use crate::store::keys;

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 200;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// Shortest TTL.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// Longest TTL.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings (the config's `[cache]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// TTL when `Put` gives none. Default 1 h.
    pub default_ttl: Duration,
    /// Largest value accepted. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Total key + value bytes kept before the least recently used are evicted. Default
    /// 256 MiB; at least `max_value_bytes`.
    pub max_total_bytes: u64,
    /// How often the sweeper runs. Default 1 s.
    pub sweep_interval: Duration,
    /// Entries removed per sweep batch at most. Default 512.
    pub sweep_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(3600),
            max_value_bytes: 1 << 20,
            max_total_bytes: 256 << 20,
            sweep_interval: Duration::from_secs(1),
            sweep_batch: 512,
        }
    }
}

/// Why a cache call failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A request field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task died (a bug).
    #[error("blocking task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// A live entry as `Get` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The value.
    pub value: Vec<u8>,
    /// When it expires (Unix ms).
    pub expires_at_ms: u64,
}

/// Counters since start, and the current size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Gets that found a live entry.
    pub hits: u64,
    /// Gets that found nothing (absent, expired or damaged).
    pub misses: u64,
    /// Entries evicted to stay within the byte budget.
    pub evictions: u64,
    /// Expired or damaged entries removed by the sweeper (or at start).
    pub expired_removed: u64,
    /// Entries indexed now (expired ones not yet swept included).
    pub entries: u64,
    /// Key + value bytes indexed now.
    pub bytes: u64,
    /// The byte budget.
    pub max_total_bytes: u64,
    /// Damaged values seen by the store (all trees) plus entries that failed to decode.
    pub corrupt_values: u64,
}

/// Checks a name: 1 to `max` bytes, no control characters.
pub(crate) fn check_name(field: &'static str, s: &str, max: usize) -> Result<(), CacheError> {
    let message = if s.is_empty() {
        "is required".to_owned()
    } else if s.len() > max {
        format!("{} bytes, at most {max} allowed", s.len())
    } else if s.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(CacheError::Invalid { field, message })
}

/// The store key of a validated `(namespace, key)`.
pub(crate) fn store_key(tenant: &str, namespace: &str, key: &str) -> Result<Vec<u8>, CacheError> {
    check_name("namespace", namespace, MAX_NAMESPACE_LEN)?;
    check_name("key", key, MAX_KEY_LEN)?;
    keys::cache_key(tenant, namespace, key).map_err(|e| CacheError::Invalid {
        field: "tenant",
        message: e.to_string(),
    })
}

/// What the in-memory index spends per entry besides the key: its hash-map slot at the
/// usual load, the key's shared allocation, and its places in the recency and expiry trees
/// (about 60 + 32 + 2 x 55 bytes). Charged so that a flood of tiny entries cannot cost
/// more RAM than the budget says (`caps` flood test measures it).
pub(crate) const INDEX_ENTRY_BYTES: usize = 200;

/// Bytes an entry is charged: its store key and value, and its place in the index.
pub(crate) fn charge(key: &[u8], value_len: usize) -> u64 {
    u64::try_from(
        key.len()
            .saturating_add(value_len)
            .saturating_add(INDEX_ENTRY_BYTES),
    )
    .unwrap_or(u64::MAX)
}
