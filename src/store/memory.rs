//! [`MemoryStore`]: the in-process backend for tests and for runs that need no durability.
//!
//! It keeps values framed exactly as the durable backends do ([`super::codec`]), keyed by
//! [`super::keys`], so the conformance suite exercises the same decode, skip-and-count
//! path on it as on sled, including injected damage. A std `Mutex` suffices: every
//! operation is a short map update with no await inside. A poisoned lock is recovered,
//! not propagated: each update is a single map call, so the map is never half-changed.
//! [`RecordStore::update`] runs its closure under the tree's lock, which makes the
//! read-modify-write atomic without a retry loop; `flush` has nothing to do.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::corrupt::CorruptTracker;
use super::keys::RecordTree;
use super::records::{RecordStore, Scanned, Write};
use super::{ResourceStore, StoreError, codec, keys};

/// One tree: key -> framed value, in key byte order.
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// Resources and records in `BTreeMap`s behind `Mutex`es; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Resource key -> framed value, in key (= name) order.
    resources: Mutex<Tree>,
    /// [`RecordTree::Idempotency`].
    idempotency: Mutex<Tree>,
    /// [`RecordTree::Cache`].
    cache: Mutex<Tree>,
    /// [`RecordTree::Learned`].
    learned: Mutex<Tree>,
    /// Damaged entries seen since creation.
    corrupt: CorruptTracker,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The map, whether or not a previous holder panicked.
    fn resources(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A record tree's map, whether or not a previous holder panicked.
    fn records(&self, tree: RecordTree) -> MutexGuard<'_, Tree> {
        match tree {
            RecordTree::Idempotency => &self.idempotency,
            RecordTree::Cache => &self.cache,
            RecordTree::Learned => &self.learned,
        }
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
    }

    /// Test hook: stores `raw` under `key` in a record tree without framing it.
    #[cfg(test)]
    pub(crate) fn insert_raw_record(&self, tree: RecordTree, key: &[u8], raw: &[u8]) {
        self.records(tree).insert(key.to_vec(), raw.to_vec());
    }

    /// Test hook: stores `raw` under `key` in the resources tree without framing it, to
    /// simulate damage.
    #[cfg(test)]
    pub(crate) fn insert_raw_resource(&self, key: &[u8], raw: &[u8]) {
        self.resources().insert(key.to_vec(), raw.to_vec());
    }
}

impl ResourceStore for MemoryStore {
    fn put_resource(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let old = self.resources().insert(key.to_vec(), codec::encode(value));
        Ok(self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref()))
    }

    fn delete_resource(&self, name: &str) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let old = self.resources().remove(key);
        Ok(self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref()))
    }

    fn list_resources(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Copy out under the lock, decode (and possibly log) outside it.
        let raw: Vec<(Vec<u8>, Vec<u8>)> = self
            .resources()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(raw
            .iter()
            .filter_map(|(k, v)| self.corrupt.decode_resource(k, v))
            .collect())
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }
}

impl RecordStore for MemoryStore {
    fn is_damaged(&self, tree: RecordTree, key: &[u8]) -> bool {
        self.corrupt.is_known(tree.name(), key)
    }

    fn get(&self, tree: RecordTree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = self.records(tree).get(key).cloned();
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
        // The closure runs under the lock: the read and the write are one step.
        let mut map = self.records(tree);
        let current = map.get(key);
        let payload = current.and_then(|raw| self.corrupt.decode_value(tree.name(), key, raw));
        let changed = match f(payload) {
            Write::Keep => false,
            Write::Delete => map.remove(key).is_some(),
            Write::Put(payload) => {
                map.insert(key.to_vec(), codec::encode(&payload));
                true
            }
        };
        if changed {
            self.corrupt.forget(tree.name(), key);
        }
        Ok(changed)
    }

    fn scan(
        &self,
        tree: RecordTree,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Scanned>, StoreError> {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        // Copy out under the lock, decode (and possibly log) outside it.
        let raw: Vec<(Vec<u8>, Vec<u8>)> = self
            .records(tree)
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(raw
            .into_iter()
            .map(|(key, raw)| {
                let value = self
                    .corrupt
                    .decode_value(tree.name(), &key, &raw)
                    .map(<[u8]>::to_vec);
                Scanned { key, value }
            })
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }
}
