//! The idempotency API's vocabulary: limits, settings, errors, requests and views, and the
//! input checks. Split from the state machine's runner so each file holds one concept.

use std::time::Duration;

use super::machine::Refusal;
use super::record::StoredResult;
use crate::store::StoreError;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// Longest fingerprint, in bytes.
pub const MAX_FINGERPRINT_LEN: usize = 512;
/// Shortest record TTL or lock TTL.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// Longest record TTL (Stripe keeps keys 24 h; a month is plenty).
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest lock TTL.
pub const MAX_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Settings (the config's `[idempotency]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Record TTL when `Begin` gives none. Default 24 h.
    pub ttl: Duration,
    /// Lock TTL when `Begin` gives none. Default 60 s (capped by the record TTL).
    pub lock_ttl: Duration,
    /// Largest encoded result `Complete` accepts. Default 1 MiB.
    pub max_result_bytes: usize,
    /// How often the sweeper runs. Default 1 s.
    pub sweep_interval: Duration,
    /// Records examined per sweep batch. Default 512.
    pub sweep_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            lock_ttl: Duration::from_secs(60),
            max_result_bytes: 1 << 20,
            sweep_interval: Duration::from_secs(1),
            sweep_batch: 512,
        }
    }
}

/// Why an idempotency call failed.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// A request field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `Get` of a key with no live record.
    #[error("no record for key {key:?} (never begun, abandoned or expired)")]
    NotFound {
        /// The key.
        key: String,
    },
    /// `Complete` or `Abandon` refused by the state machine; nothing changed.
    #[error("key {key:?}: {}", refusal_text(*.refusal))]
    Refused {
        /// The key.
        key: String,
        /// Why.
        refusal: Refusal,
    },
    /// The key's record is damaged: what it held is unknown, so the call must not run again
    /// under it (fail closed). Counted; the record stays until an operator removes it.
    #[error(
        "key {key:?}: its record is damaged; permitd will not let the call run again under \
         it (use another key, or have an operator remove the record)"
    )]
    Damaged {
        /// The key.
        key: String,
    },
    /// The tenant keeps all the records or bytes it may (RESOURCE_EXHAUSTED); nothing
    /// was written.
    #[error("{cap} reached: {what} (at most {limit}; raise it in [limits], or per tenant)")]
    Exhausted {
        /// The cap's setting, e.g. `max_idempotency_records_per_tenant`.
        cap: &'static str,
        /// Its value.
        limit: usize,
        /// What is full, in words.
        what: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task died (a bug).
    #[error("blocking task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// The message tail of a refusal.
fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::NotBegun => "no call in progress (never begun, abandoned or expired): call Begin",
        Refusal::AlreadyCompleted => "already completed; the stored result is kept",
        Refusal::NotHolder => "the lock is held by another caller (yours expired)",
        Refusal::LockExpired => "the lock expired; call Begin again",
    }
}

/// `Begin`'s request, after the transport decoded it.
#[derive(Debug, Clone, Default)]
pub struct BeginRequest {
    /// The request's digest.
    pub fingerprint: String,
    /// Record TTL; `None` = the configured default.
    pub ttl: Option<Duration>,
    /// Lock TTL; `None` = the configured default (capped by the record TTL).
    pub lock_ttl: Option<Duration>,
}

/// A key's record as `Get` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    /// The request digest the key was begun with.
    pub fingerprint: String,
    /// The result, once completed; `None` while in progress.
    pub result: Option<StoredResult>,
    /// When the record expires (Unix ms).
    pub expires_at_ms: u64,
    /// While in progress: when the lock ends (Unix ms; may be past).
    pub lock_expires_at_ms: Option<u64>,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Begins answered ACQUIRED.
    pub acquired: u64,
    /// Begins answered IN_PROGRESS.
    pub in_progress: u64,
    /// Begins answered COMPLETED (a replay).
    pub replayed: u64,
    /// Begins answered FINGERPRINT_MISMATCH.
    pub mismatched: u64,
    /// Completes stored.
    pub completed: u64,
    /// Abandons done.
    pub abandoned: u64,
    /// Expired or damaged records removed by the sweeper.
    pub expired_removed: u64,
    /// Damaged values seen by the store (all trees) plus records that failed to decode.
    pub corrupt_values: u64,
}

/// Checks a key: 1 to 255 bytes, no control characters.
///
/// # Errors
/// [`IdempotencyError::Invalid`] naming `key`.
pub fn check_key(key: &str) -> Result<(), IdempotencyError> {
    let message = if key.is_empty() {
        "is required".to_owned()
    } else if key.len() > MAX_KEY_LEN {
        format!("{} bytes, at most {MAX_KEY_LEN} allowed", key.len())
    } else if key.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(IdempotencyError::Invalid {
        field: "key",
        message,
    })
}

/// Checks an optional TTL against `[MIN_TTL, max]`.
pub(crate) fn check_ttl(
    field: &'static str,
    d: Option<Duration>,
    max: Duration,
) -> Result<(), IdempotencyError> {
    match d {
        Some(d) if d < MIN_TTL || d > max => Err(IdempotencyError::Invalid {
            field,
            message: format!(
                "{} is out of range [{}, {}]",
                humantime::format_duration(d),
                humantime::format_duration(MIN_TTL),
                humantime::format_duration(max)
            ),
        }),
        _ => Ok(()),
    }
}
