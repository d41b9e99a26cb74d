//! [`MemoryStore`]: the in-process backend for tests and for runs that need no durability.
//!
//! It keeps values framed exactly as the durable backends do ([`super::codec`]), keyed by
//! [`super::keys`], so the conformance suite exercises the same decode, skip-and-count
//! path on it as on sled, including injected damage. A std `Mutex` suffices: every
//! operation is a short map update with no await inside. A poisoned lock is recovered,
//! not propagated: each update is a single map call, so the map is never half-changed.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::corrupt::CorruptTracker;
use super::{ResourceStore, StoreError, codec, keys};

/// Resources in a `BTreeMap` behind a `Mutex`; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Resource key -> framed value, in key (= name) order.
    resources: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
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
