//! [`SledStore`]: the embedded, durable default backend on sled 0.34.7.
//!
//! sled is pinned (0.34.7 is its last release) and has known sharp edges, handled here:
//! - `flush_async` can deadlock across runtimes (spacejam/sled#1357), so writes call the
//!   blocking `Tree::flush` before returning; async callers wrap calls in `spawn_blocking`.
//!   sled's own background flush runs only every 500 ms, so without this an acknowledged
//!   write could be lost on kill -9.
//! - values have been reported corrupt after abrupt stops (#1527, #1533), so every value
//!   is framed with a checksum ([`super::codec`]); a damaged one reads as absent and is
//!   counted.
//! - sled takes an exclusive lock on its data file, so a second process (or a second open
//!   in this one) on the same directory fails to open; the error says so.
//!
//! No sled type leaves this file: errors are boxed into [`StoreError`] sources.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::corrupt::CorruptTracker;
use super::{BoxError, OpenHint, ResourceStore, StoreError, codec, keys};

/// Resources in a sled database directory, flushed to disk before each write returns.
pub struct SledStore {
    /// The directory the database lives in (for messages).
    path: PathBuf,
    /// The database; kept so every tree of the layout comes from one handle.
    _db: ::sled::Db,
    /// [`keys::RESOURCES_TREE`].
    resources: ::sled::Tree,
    /// Damaged entries seen since open.
    corrupt: CorruptTracker,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("corrupt_values", &self.corrupt.count())
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `dir`.
    ///
    /// Blocks while sled recovers its log; call it before serving, or in `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::Open`] naming `dir` and the likely fix: the path is not a directory,
    /// permission denied, the directory is locked by another process (sled holds an
    /// exclusive lock on its data file while open), or the data is damaged or incompatible.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let open_error = |hint, source: BoxError| StoreError::Open {
            path: dir.to_path_buf(),
            hint,
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(io_hint(&e), e.into()))?;
        let db = ::sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| open_error(sled_hint(&e), e.into()))?;
        let resources = db
            .open_tree(keys::RESOURCES_TREE)
            .map_err(|e| open_error(sled_hint(&e), e.into()))?;
        tracing::debug!(path = %dir.display(), "sled store opened");
        Ok(SledStore {
            path: dir.to_path_buf(),
            _db: db,
            resources,
            corrupt: CorruptTracker::default(),
        })
    }

    /// The directory this store was opened on.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the resources tree to disk (blocking: see the module docs).
    fn flush(&self) -> Result<(), StoreError> {
        self.resources
            .flush()
            .map(drop)
            .map_err(|e| backend("flush", e))
    }

    /// Test hook: stores `raw` under `key` in the resources tree without framing it, to
    /// simulate damage on disk, and flushes so a reopen sees it.
    #[cfg(test)]
    pub(crate) fn insert_raw_resource(&self, key: &[u8], raw: &[u8]) -> Result<(), StoreError> {
        self.resources
            .insert(key, raw)
            .map_err(|e| backend("insert", e))?;
        self.flush()
    }
}

impl ResourceStore for SledStore {
    fn put_resource(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let old = self
            .resources
            .insert(key, codec::encode(value))
            .map_err(|e| backend("insert", e))?;
        let replaced = self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref());
        self.flush()?;
        Ok(replaced)
    }

    fn delete_resource(&self, name: &str) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let old = self
            .resources
            .remove(key)
            .map_err(|e| backend("remove", e))?;
        let existed = self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref());
        self.flush()?;
        Ok(existed)
    }

    fn list_resources(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for entry in &self.resources {
            let (key, raw) = entry.map_err(|e| backend("iterate", e))?;
            out.extend(self.corrupt.decode_resource(&key, &raw));
        }
        Ok(out)
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }
}

/// A sled error during an operation, with its transience decided here.
fn backend(op: &'static str, e: ::sled::Error) -> StoreError {
    StoreError::Backend {
        op,
        transient: is_transient(&e),
        source: e.into(),
    }
}

/// I/O trouble may pass (disk freed, device back); damage, bugs and misuse will not.
fn is_transient(e: &::sled::Error) -> bool {
    match e {
        ::sled::Error::Io(_) => true,
        ::sled::Error::CollectionNotFound(_)
        | ::sled::Error::Unsupported(_)
        | ::sled::Error::ReportableBug(_)
        | ::sled::Error::Corruption { .. } => false,
    }
}

/// The operator hint for an I/O error from creating or opening the directory.
fn io_hint(e: &std::io::Error) -> OpenHint {
    match e.kind() {
        ErrorKind::NotADirectory | ErrorKind::AlreadyExists => OpenHint::NotADirectory,
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => OpenHint::PermissionDenied,
        ErrorKind::WouldBlock => OpenHint::Locked,
        _ => OpenHint::Other,
    }
}

/// The operator hint for a sled open error.
fn sled_hint(e: &::sled::Error) -> OpenHint {
    match e {
        // sled 0.34.7 reports a held lock as `Other` with this text (config.rs, try_lock).
        ::sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            OpenHint::Locked
        }
        ::sled::Error::Io(io) => io_hint(io),
        ::sled::Error::Corruption { .. } => OpenHint::Corrupt,
        ::sled::Error::Unsupported(_) => OpenHint::Incompatible,
        ::sled::Error::CollectionNotFound(_) | ::sled::Error::ReportableBug(_) => OpenHint::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves I/O errors are transient and damage or misuse are not.
    #[test]
    fn transience_of_sled_errors() {
        assert!(is_transient(&::sled::Error::Io(std::io::Error::other("x"))));
        assert!(!is_transient(&::sled::Error::Unsupported("x".into())));
        assert!(!is_transient(&::sled::Error::ReportableBug("x".into())));
    }

    /// Proves each recognisable open failure gets its specific operator hint.
    #[test]
    fn open_errors_map_to_hints() {
        let io = |kind| ::sled::Error::Io(std::io::Error::from(kind));
        let lock = ::sled::Error::Io(std::io::Error::other(
            "could not acquire lock on \"/d/db\": Os { code: 11 }",
        ));
        assert_eq!(sled_hint(&lock), OpenHint::Locked);
        assert_eq!(
            sled_hint(&io(ErrorKind::PermissionDenied)),
            OpenHint::PermissionDenied
        );
        assert_eq!(
            sled_hint(&io(ErrorKind::NotADirectory)),
            OpenHint::NotADirectory
        );
        assert_eq!(
            sled_hint(&::sled::Error::Unsupported("compression".into())),
            OpenHint::Incompatible
        );
        assert_eq!(sled_hint(&io(ErrorKind::Interrupted)), OpenHint::Other);
    }
}
