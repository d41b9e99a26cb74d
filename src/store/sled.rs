//! [`SledStore`]: the embedded, durable default backend on sled 0.34.7.
//!
//! sled is pinned (0.34.7 is its last release) and has known sharp edges, handled here:
//! - `flush_async` can deadlock across runtimes (spacejam/sled#1357), so writes call the
//!   blocking `Tree::flush` before returning; async callers wrap calls in `spawn_blocking`.
//!   sled's own background flush runs only every 500 ms, so without this an acknowledged
//!   write could be lost on kill -9.
//! - on Linux, sled's `flush` writes its log with `sync_file_range`, which survives a
//!   process crash but neither flushes the drive's write cache nor the file's size, so a
//!   power loss could still take the write (sled fsyncs only from its 500 ms background
//!   thread). [`SledStore`] therefore follows every flush with an `fdatasync` of sled's data
//!   file (`<dir>/db`; an fsync through our own descriptor covers the inode). Left open:
//!   sled writes nodes over ~128 KiB (large values) to files under `<dir>/blobs` that it
//!   never fsyncs; those survive kill -9 but not necessarily a power loss.
//! - values have been reported corrupt after abrupt stops (#1527, #1533), so every value
//!   is framed with a checksum ([`super::codec`]); a damaged one reads as absent and is
//!   counted.
//! - sled takes an exclusive lock on its data file, so a second process (or a second open
//!   in this one) on the same directory fails to open; the error says so.
//!
//! - [`RecordStore::update`] is `get` + `compare_and_swap` of the exact bytes read, looped
//!   until no other writer got in between; record writes are not flushed per call but by
//!   the caller's group commit ([`super::GroupCommit`]). sled's flush covers the whole
//!   database (every tree shares one log), so one flush serves all writes in any tree.
//!
//! No sled type leaves this file: errors are boxed into [`StoreError`] sources.

use std::fmt;
use std::io::ErrorKind;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::corrupt::CorruptTracker;
use super::keys::RecordTree;
use super::records::{RecordStore, Scanned, Write};
use super::{BoxError, OpenHint, ResourceStore, StoreError, codec, keys};

/// Resources in a sled database directory, flushed to disk before each write returns.
pub struct SledStore {
    /// The directory the database lives in (for messages).
    path: PathBuf,
    /// The database; kept so every tree of the layout comes from one handle.
    db: ::sled::Db,
    /// [`keys::RESOURCES_TREE`].
    resources: ::sled::Tree,
    /// [`keys::IDEMPOTENCY_TREE`].
    idempotency: ::sled::Tree,
    /// [`keys::CACHE_TREE`].
    cache: ::sled::Tree,
    /// [`keys::LEARNED_TREE`].
    learned: ::sled::Tree,
    /// sled's data file, opened read-only to `fdatasync` it after each flush.
    data_file: std::fs::File,
    /// Damaged entries seen since open.
    corrupt: CorruptTracker,
    /// Who is told of the first I/O error ([`RecordStore::on_fault`]).
    fault: std::sync::OnceLock<super::FaultReport>,
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
    /// Like [`SledStore::open`], but while another holder still has the directory's lock,
    /// retries until `wait` has passed (errors as for `open`): sled releases the lock from its background threads
    /// a moment after the last handle drops, and a restarted permitd may start while its
    /// predecessor is still exiting.
    pub fn open_within(dir: &Path, wait: std::time::Duration) -> Result<SledStore, StoreError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match SledStore::open(dir) {
                Err(StoreError::Open {
                    hint: OpenHint::Locked,
                    ..
                }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

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
        let tree = |name| {
            db.open_tree(name)
                .map_err(|e| open_error(sled_hint(&e), e.into()))
        };
        let resources = tree(keys::RESOURCES_TREE)?;
        let idempotency = tree(keys::IDEMPOTENCY_TREE)?;
        let cache = tree(keys::CACHE_TREE)?;
        let learned = tree(keys::LEARNED_TREE)?;
        // sled 0.34.7 keeps its log and pages in `<dir>/db` (config.rs, `db_path`).
        let data_file =
            std::fs::File::open(dir.join("db")).map_err(|e| open_error(io_hint(&e), e.into()))?;
        tracing::debug!(path = %dir.display(), "sled store opened");
        Ok(SledStore {
            path: dir.to_path_buf(),
            db,
            resources,
            idempotency,
            cache,
            learned,
            data_file,
            corrupt: CorruptTracker::default(),
            fault: std::sync::OnceLock::new(),
        })
    }

    /// The directory this store was opened on.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database occupies on disk (sled's own figure), for soak measurements.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when sled cannot read its files' sizes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db
            .size_on_disk()
            .map_err(|e| self.backend("size_on_disk", e))
    }

    /// The sled tree of a record tree.
    fn record_tree(&self, tree: RecordTree) -> &::sled::Tree {
        match tree {
            RecordTree::Idempotency => &self.idempotency,
            RecordTree::Cache => &self.cache,
            RecordTree::Learned => &self.learned,
        }
    }

    /// Test hook: stores `raw` under `key` in a record tree without framing it.
    #[cfg(test)]
    pub(crate) fn insert_raw_record(
        &self,
        tree: RecordTree,
        key: &[u8],
        raw: &[u8],
    ) -> Result<(), StoreError> {
        self.record_tree(tree)
            .insert(key, raw)
            .map_err(|e| self.backend("insert", e))?;
        self.flush()
    }

    /// Flushes the database to disk, then `fdatasync`s its data file (blocking: see the
    /// module docs). Every tree shares one log, so this covers all of them.
    fn flush(&self) -> Result<(), StoreError> {
        self.resources
            .flush()
            .map_err(|e| self.backend("flush", e))?;
        self.data_file.sync_data().map_err(|e| StoreError::Backend {
            op: "fdatasync",
            transient: true,
            source: e.into(),
        })
    }

    /// Test hook: stores `raw` under `key` in the resources tree without framing it, to
    /// simulate damage on disk, and flushes so a reopen sees it.
    #[cfg(test)]
    pub(crate) fn insert_raw_resource(&self, key: &[u8], raw: &[u8]) -> Result<(), StoreError> {
        self.resources
            .insert(key, raw)
            .map_err(|e| self.backend("insert", e))?;
        self.flush()
    }
}

impl ResourceStore for SledStore {
    fn put_resource(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let old = self
            .resources
            .insert(key, codec::encode(value))
            .map_err(|e| self.backend("insert", e))?;
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
            .map_err(|e| self.backend("remove", e))?;
        let existed = self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref());
        self.flush()?;
        Ok(existed)
    }

    fn list_resources(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for entry in &self.resources {
            let (key, raw) = entry.map_err(|e| self.backend("iterate", e))?;
            out.extend(self.corrupt.decode_resource(&key, &raw));
        }
        Ok(out)
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }
}

impl RecordStore for SledStore {
    fn is_damaged(&self, tree: RecordTree, key: &[u8]) -> bool {
        self.corrupt.is_known(tree.name(), key)
    }

    fn get(&self, tree: RecordTree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = self
            .record_tree(tree)
            .get(key)
            .map_err(|e| self.backend("get", e))?;
        Ok(raw.and_then(|raw| {
            self.corrupt
                .decode_value(tree.name(), key, &raw)
                .map(<[u8]>::to_vec)
        }))
    }

    fn update(
        &self,
        tree: RecordTree,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>) -> Write,
    ) -> Result<bool, StoreError> {
        let t = self.record_tree(tree);
        loop {
            let current = t.get(key).map_err(|e| self.backend("get", e))?;
            let payload = current
                .as_ref()
                .and_then(|raw| self.corrupt.decode_value(tree.name(), key, raw));
            let new = match f(payload) {
                Write::Keep => return Ok(false),
                Write::Delete if current.is_none() => return Ok(false),
                Write::Delete => None,
                Write::Put(payload) => Some(codec::encode(&payload)),
            };
            // Swap only if the key still holds exactly the bytes `f` saw.
            let swapped = t
                .compare_and_swap(key, current.as_ref(), new)
                .map_err(|e| self.backend("compare_and_swap", e))?;
            if swapped.is_ok() {
                self.corrupt.forget(tree.name(), key);
                return Ok(true);
            }
        }
    }

    fn scan(
        &self,
        tree: RecordTree,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Scanned>, StoreError> {
        let t = self.record_tree(tree);
        let iter = match after {
            Some(after) => t.range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded)),
            None => t.iter(),
        };
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (key, raw) = entry.map_err(|e| self.backend("iterate", e))?;
            let value = self
                .corrupt
                .decode_value(tree.name(), &key, &raw)
                .map(<[u8]>::to_vec);
            out.push(Scanned {
                key: key.to_vec(),
                value,
            });
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        SledStore::flush(self)
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }

    fn on_fault(&self, report: super::FaultReport) {
        let _ = self.fault.set(report);
    }
}

impl SledStore {
    /// [`backend`], telling the fault report of an I/O error first: sled latches it, so
    /// every later write fails until the store is reopened.
    fn backend(&self, op: &'static str, e: ::sled::Error) -> StoreError {
        let io = matches!(e, ::sled::Error::Io(_));
        let err = backend(op, e);
        if io && let Some(report) = self.fault.get() {
            report(&err);
        }
        err
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
