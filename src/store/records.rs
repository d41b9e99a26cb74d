//! [`RecordStore`]: the storage primitive under idempotency records and cached results.
//!
//! # Why one read-modify-write primitive
//! Every decision of the idempotency state machine ("is this key free? then it is mine")
//! and of the cache ("what did this put replace?") reads the current value and writes a new
//! one. Done as a get, then a put, two callers can both see "free" and both win. So the
//! trait's mutating call is [`RecordStore::update`]: the backend hands the current payload
//! to a closure and commits the closure's [`Write`] only if the value is still the one the
//! closure saw, retrying otherwise. Each backend provides it natively:
//! - sled: `get` + `compare_and_swap` of the exact bytes read, looping on conflict;
//! - memory: the closure runs under the map's mutex;
//! - Redis (one server or a cluster): `GET`, then a Lua compare-and-set that does
//!   `SET+ZADD|DEL+ZREM` only if the record still holds the bytes read (the sorted set
//!   indexes the tree for scans), retried when the script refuses.
//!
//! The closure may therefore run more than once and must be a pure function of its input
//! (capture results by assignment: the last run is the one committed). It must not block or
//! call the store.
//!
//! Domain policy (what a record means, when it expires) stays with the callers; the trait
//! speaks bytes and tree names only, so it names no backend type. Values are framed by the
//! store ([`super::codec`]) exactly like resources: a damaged value reads as absent
//! (`None` to the closure, `None` from [`RecordStore::get`]) and is counted once.
//!
//! Writes are made durable by [`RecordStore::flush`], which callers batch through
//! [`super::GroupCommit`] instead of flushing per write.

use super::StoreError;
use super::keys::RecordTree;

/// Told of a store's fault, with the error ([`RecordStore::on_fault`]).
pub type FaultReport = std::sync::Arc<dyn Fn(&StoreError) + Send + Sync>;

/// What an [`RecordStore::update`] closure decides to do with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Leave the stored value as it is (nothing is written).
    Keep,
    /// Store this payload (unframed: the store frames it).
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
}

/// One entry of a [`RecordStore::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The stored key.
    pub key: Vec<u8>,
    /// The payload; `None` when the stored value is damaged (already logged and counted),
    /// so a sweeper can remove it.
    pub value: Option<Vec<u8>>,
}

/// Expiring records keyed by bytes in a fixed set of trees ([`RecordTree`]).
///
/// Calls block (disk I/O): from async code, run them in `spawn_blocking`. Writes are in
/// the backend's memory when the call returns and durable after the next successful
/// [`flush`](RecordStore::flush).
pub trait RecordStore: Send + Sync + 'static {
    /// The payload stored under `key`, or `None` when absent or damaged.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend cannot be read.
    fn get(&self, tree: RecordTree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Atomic read-modify-write of one key: calls `f` with the current payload (`None` when
    /// absent or damaged) and commits its [`Write`] only if the key still holds what `f`
    /// saw; otherwise calls `f` again with the new value. Returns whether the store
    /// changed (`Keep`, or `Delete` of an absent key, change nothing).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when reading or writing fails; the write then did not happen
    /// or its outcome is unknown.
    fn update(
        &self,
        tree: RecordTree,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>) -> Write,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` entries in key byte order, starting strictly after `after` (from the
    /// first key when `None`). Fewer than `limit` means the end was reached. For bounded
    /// sweeps: pass the last key returned as the next `after`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend cannot be read.
    fn scan(
        &self,
        tree: RecordTree,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Scanned>, StoreError>;

    /// Makes every write that returned before this call durable (blocking; sled: its
    /// blocking `flush`, never `flush_async`, spacejam/sled#1357; Redis: nothing to do,
    /// durability there is Redis's own `appendfsync` setting).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the flush fails: those writes may not survive a crash.
    fn flush(&self) -> Result<(), StoreError>;

    /// Whether `key` holds a value that failed its checks (which `get`, `update` and
    /// `scan` read as absent), so a caller for whom absent is not safe can fail closed.
    fn is_damaged(&self, tree: RecordTree, key: &[u8]) -> bool;

    /// Have `report` called with the first I/O error of any operation on this store. For a
    /// backend that latches I/O errors (sled fails every later write until reopened) that
    /// error is the store's fault, not one call's: the server stops serving on it.
    fn on_fault(&self, report: FaultReport) {
        let _ = report;
    }

    /// Whether other processes write to the same records (Redis shared by replicas), so
    /// counts kept in memory must be refreshed from scans.
    fn shared(&self) -> bool {
        false
    }

    /// Damaged values seen since open, in every tree (the same counter as
    /// [`super::ResourceStore::corrupt_values`] on a backend implementing both).
    fn corrupt_values(&self) -> u64;
}
