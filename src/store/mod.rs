//! Persistence behind traits: what must survive a restart (resource definitions through
//! [`ResourceStore`]; idempotency records and cached results through [`RecordStore`], whose
//! one atomic read-modify-write primitive is explained in its module), on sled (the embedded
//! default), in Redis (shared by replicas) or in memory (tests). [`GroupCommit`] makes record writes
//! durable in batches, one flush for every write that arrived meanwhile.
//!
//! The public surface names no backend type: the traits speak `&str` and bytes,
//! and [`StoreError`] boxes backend errors as sources, so adding a backend changes no
//! caller. Values are opaque bytes to the store (the caller encodes them); the store frames
//! each one with a version and a checksum ([`codec`]) and lays keys out in one place
//! ([`keys`]). Methods are synchronous and may block on disk: async callers run them in
//! `tokio::task::spawn_blocking`. This module must not decide policy (what a resource
//! means, when to retry); it reports whether a failure is transient and leaves the rest to
//! the caller.
//!
//! [`ResourceStore`]: crate::store::ResourceStore
//! [`RecordStore`]: crate::store::RecordStore
//! [`GroupCommit`]: crate::store::GroupCommit
//! [`StoreError`]: crate::store::StoreError
//! [`codec`]: crate::store::codec
//! [`keys`]: crate::store::keys

pub mod codec;
mod commit;
mod corrupt;
pub mod keys;
mod memory;
mod records;
mod redis;
pub(crate) use self::redis::{cluster_builder, redis_client};
mod sled;

#[cfg(test)]
mod conformance;

use std::path::PathBuf;

pub use self::commit::GroupCommit;
pub use self::memory::MemoryStore;
pub use self::records::{FaultReport, RecordStore, Scanned, Write};
pub use self::redis::{RedisStore, RedisTls};
pub use self::sled::SledStore;

/// A backend's own error, kept as a source without naming its type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
///
/// Every variant says whether retrying can help ([`StoreError::is_transient`]): the server
/// maps transient failures to `UNAVAILABLE`, never to a denial.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed to read, write or flush. With a write, the outcome is unknown:
    /// the write may or may not be durable, and repeating it is safe (puts and deletes are
    /// idempotent).
    #[error("store {op} failed")]
    Backend {
        /// The operation that failed, e.g. `"flush"`.
        op: &'static str,
        /// Whether repeating the operation later can succeed (I/O trouble) or not
        /// (corruption detected by the backend, a bug, misuse).
        transient: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A stored entry failed its checks. Reads treat such an entry as absent, log this
    /// error and count it ([`ResourceStore::corrupt_values`]); it is the error value that
    /// gets logged, and is returned only by operations documented to do so.
    #[error("corrupt entry {key:?} in {tree}")]
    Corrupt {
        /// Tree (key space) of the entry, one of [`keys::ALL_TREES`].
        tree: &'static str,
        /// The key, escaped for display by [`keys::display_key`].
        key: String,
        /// What failed.
        #[source]
        source: Corruption,
    },
    /// The store could not be opened. The message names the path (for Redis, the URL with
    /// any password masked) and what the operator can do about it.
    #[error("cannot open store at {}: {hint}", path.display())]
    Open {
        /// The directory (or Redis URL) that was being opened.
        path: PathBuf,
        /// The likely cause, displayed as advice.
        hint: OpenHint,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether the same call may succeed if repeated later (maps to `UNAVAILABLE`).
    ///
    /// Corruption and open failures are not transient: they need an operator.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Backend { transient, .. } => *transient,
            Self::Corrupt { .. } | Self::Open { .. } => false,
        }
    }
}

/// What is wrong with a corrupt entry.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// The value's frame is damaged (short, unknown version, checksum mismatch).
    #[error("invalid value frame")]
    Value(#[source] codec::CodecError),
    /// The key does not decode under the current layout.
    #[error("invalid key")]
    Key(#[source] keys::KeyError),
}

/// The operator's next step when a store fails to open; its `Display` is that advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenHint {
    /// The path, or one of its parents, exists and is not a directory.
    NotADirectory,
    /// The process may not create, read or write the directory (or the file system is
    /// read-only).
    PermissionDenied,
    /// Another process (another permitd on the same directory) holds the store's lock.
    Locked,
    /// The backend found damaged data while opening.
    Corrupt,
    /// The data was written with settings or a version this build cannot read.
    Incompatible,
    /// The server (Redis) did not answer: wrong address, not running, or unreachable.
    Unreachable,
    /// The address or settings cannot work (a malformed URL, a zero timeout, a bad key
    /// prefix, refused credentials).
    InvalidSettings,
    /// No specific cause recognised.
    Other,
}

impl std::fmt::Display for OpenHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotADirectory => {
                "the path or one of its parents is not a directory; point the data directory \
                 at a directory, or move the file out of the way"
            }
            Self::PermissionDenied => {
                "permission denied; check that the permitd user can create, read and write \
                 this directory and that the file system is not read-only"
            }
            Self::Locked => {
                "the store is locked, probably by another permitd using the same data \
                 directory; stop that process or give each instance its own directory"
            }
            Self::Corrupt => {
                "the data is damaged; restore the directory from a backup, or move it aside \
                 to start with an empty store"
            }
            Self::Incompatible => {
                "the data was written with incompatible settings or version; restore a \
                 backup made by this version, or use a fresh directory"
            }
            Self::Unreachable => {
                "the server does not answer; check its address and port, that it is running, \
                 and that the network lets this host reach it"
            }
            Self::InvalidSettings => {
                "the address or settings are invalid; correct the URL, credentials, key \
                 prefix or timeout in the configuration"
            }
            Self::Other => {
                "check permissions and free disk space, that no other permitd holds the lock \
                 on this directory, and restore a backup if the data is damaged"
            }
        })
    }
}

/// Durable storage of resource definitions (opaque bytes: the caller encodes them).
///
/// Calls block (disk I/O, fsync): from async code, run them in `spawn_blocking`. A corrupt
/// entry is absent for every method: not listed, not "replaced", not "existed".
pub trait ResourceStore: Send + Sync + 'static {
    /// Insert or replace; returns true when it replaced. Durable (flushed) when it returns
    /// (on Redis: as durable as its `appendfsync` setting makes an applied write).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the write or the flush fails; the write may then
    /// have happened or not, and repeating it is safe.
    fn put_resource(&self, name: &str, value: &[u8]) -> Result<bool, StoreError>;

    /// Remove; returns true when it existed. Durable when it returns.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the removal or the flush fails; repeating it is safe.
    fn delete_resource(&self, name: &str) -> Result<bool, StoreError>;

    /// Every stored resource in name order. Corrupt values are skipped, logged with
    /// `tracing::warn` and counted, never returned.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend cannot be read.
    fn list_resources(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Corrupt values seen since open: each damaged entry counts once until it is
    /// overwritten or deleted, however often it is read.
    fn corrupt_values(&self) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves only backend failures flagged transient are reported as transient.
    #[test]
    fn transience_follows_the_variant() {
        let io = || -> BoxError { Box::new(std::io::Error::other("disk")) };
        let backend = |transient| StoreError::Backend {
            op: "flush",
            transient,
            source: io(),
        };
        assert!(backend(true).is_transient());
        assert!(!backend(false).is_transient());
        let corrupt = StoreError::Corrupt {
            tree: keys::RESOURCES_TREE,
            key: "a".into(),
            source: Corruption::Value(codec::CodecError::TooShort { len: 0 }),
        };
        assert!(!corrupt.is_transient());
        let open = StoreError::Open {
            path: "/data".into(),
            hint: OpenHint::Locked,
            source: io(),
        };
        assert!(!open.is_transient());
    }

    /// Proves messages are lowercase, name the path and the advice, and keep the source
    /// out of the message (it is reachable through `source()`).
    #[test]
    fn messages_name_path_and_advice_not_source() {
        let open = StoreError::Open {
            path: "/var/lib/permitd".into(),
            hint: OpenHint::Locked,
            source: Box::new(std::io::Error::other("flock: would block")),
        };
        let msg = open.to_string();
        assert!(msg.starts_with("cannot open store at /var/lib/permitd: the store is locked"));
        assert!(msg.contains("another permitd"));
        assert!(!msg.contains("flock"));
        let source = std::error::Error::source(&open).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("flock: would block"));
    }

    /// Proves every hint's advice starts lowercase and has no trailing period.
    #[test]
    fn hints_read_as_message_tails() {
        use OpenHint::*;
        for hint in [
            NotADirectory,
            PermissionDenied,
            Locked,
            Corrupt,
            Incompatible,
            Unreachable,
            InvalidSettings,
            Other,
        ] {
            let text = hint.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }
}
