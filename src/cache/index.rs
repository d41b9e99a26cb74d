//! The cache's in-memory index of what the store holds: each entry's size, expiry and
//! recency, so the byte budget is known without scanning, the least recently used entry
//! is found in O(log n), and the sweeper finds expired entries in expiry order.
//!
//! Pure data structure, no I/O: [`super::Cache`] keeps it in step with the store (every
//! change to the store happens under the lock that guards this index). Keys are shared
//! `Arc<[u8]>` so the three maps hold one copy of each key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What the index knows about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Bytes charged to the budget (key + value).
    pub(crate) size: u64,
    /// When it expires (Unix ms).
    pub(crate) expires_at_ms: u64,
    /// Recency: larger is more recent.
    tick: u64,
}

/// Sizes, expiries and recency of every entry.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Key -> its metadata.
    entries: HashMap<Arc<[u8]>, Meta>,
    /// Recency order: tick -> key (first = least recently used).
    lru: BTreeMap<u64, Arc<[u8]>>,
    /// Expiry order.
    expiry: BTreeSet<(u64, Arc<[u8]>)>,
    /// Sum of sizes.
    bytes: u64,
    /// Next recency tick.
    next_tick: u64,
}

impl Index {
    /// Entries indexed.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of all entries.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next recency tick.
    fn tick(&mut self) -> u64 {
        let t = self.next_tick;
        self.next_tick = self.next_tick.saturating_add(1);
        t
    }

    /// Adds or replaces an entry as the most recently used.
    pub(crate) fn insert(&mut self, key: &[u8], size: u64, expires_at_ms: u64) {
        self.remove(key);
        let key: Arc<[u8]> = Arc::from(key);
        let tick = self.tick();
        self.lru.insert(tick, Arc::clone(&key));
        self.expiry.insert((expires_at_ms, Arc::clone(&key)));
        self.bytes = self.bytes.saturating_add(size);
        self.entries.insert(
            key,
            Meta {
                size,
                expires_at_ms,
                tick,
            },
        );
    }

    /// Marks an entry as just used; unknown keys are ignored.
    pub(crate) fn touch(&mut self, key: &[u8]) {
        let tick = self.tick();
        if let Some((k, meta)) = self.entries.get_key_value(key) {
            let k = Arc::clone(k);
            let old = meta.tick;
            self.lru.remove(&old);
            self.lru.insert(tick, k);
            if let Some(meta) = self.entries.get_mut(key) {
                meta.tick = tick;
            }
        }
    }

    /// Removes an entry; returns its metadata if it was indexed.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Meta> {
        let (k, meta) = self.entries.remove_entry(key)?;
        self.lru.remove(&meta.tick);
        self.expiry.remove(&(meta.expires_at_ms, k));
        self.bytes = self.bytes.saturating_sub(meta.size);
        Some(meta)
    }

    /// The least recently used entry other than `except` (the one just written).
    pub(crate) fn lru_victim(&self, except: &[u8]) -> Option<Arc<[u8]>> {
        self.lru
            .values()
            .find(|k| k.as_ref() != except)
            .map(Arc::clone)
    }

    /// Up to `limit` keys expired at `now`, earliest expiry first.
    pub(crate) fn expired(&self, now_ms: u64, limit: usize) -> Vec<Arc<[u8]>> {
        self.expiry
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, k)| Arc::clone(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Proves sizes add up, replacing an entry replaces its size, removal subtracts.
    #[test]
    fn bytes_follow_inserts_replaces_and_removes() {
        let mut i = Index::default();
        i.insert(b"a", 10, 100);
        i.insert(b"b", 5, 100);
        assert_eq!((i.len(), i.bytes()), (2, 15));
        i.insert(b"a", 1, 100);
        assert_eq!((i.len(), i.bytes()), (2, 6));
        assert_eq!(i.remove(b"a").map(|m| m.size), Some(1));
        assert_eq!(i.remove(b"a"), None);
        assert_eq!((i.len(), i.bytes()), (1, 5));
    }

    /// Proves the victim is the least recently used: inserted first and not touched since,
    /// never the entry just written.
    #[test]
    fn victim_is_least_recently_used() {
        let mut i = Index::default();
        for k in [b"a", b"b", b"c"] {
            i.insert(k, 1, 100);
        }
        assert_eq!(i.lru_victim(b"c").as_deref(), Some(&b"a"[..]));
        i.touch(b"a");
        assert_eq!(i.lru_victim(b"c").as_deref(), Some(&b"b"[..]));
        i.insert(b"b", 1, 100);
        assert_eq!(i.lru_victim(b"x").as_deref(), Some(&b"c"[..]));
        assert_eq!(i.lru_victim(b"c").as_deref(), Some(&b"a"[..]));
        i.touch(b"unknown");
        let mut only = Index::default();
        only.insert(b"x", 1, 1);
        assert_eq!(only.lru_victim(b"x"), None);
    }

    /// Proves expired keys come out earliest first, bounded by the limit and by `now`.
    #[test]
    fn expired_in_expiry_order() {
        let mut i = Index::default();
        i.insert(b"late", 1, 300);
        i.insert(b"early", 1, 100);
        i.insert(b"mid", 1, 200);
        let names = |v: Vec<Arc<[u8]>>| v.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(names(i.expired(99, 10)), Vec::<Vec<u8>>::new());
        assert_eq!(
            names(i.expired(200, 10)),
            [b"early".to_vec(), b"mid".to_vec()]
        );
        assert_eq!(names(i.expired(1000, 1)), [b"early".to_vec()]);
        i.insert(b"early", 1, 1000);
        assert_eq!(names(i.expired(200, 10)), [b"mid".to_vec()]);
    }

    proptest! {
        /// Proves, over random operations, that bytes equal the sum of live sizes and the
        /// three maps agree on which keys exist.
        #[test]
        fn maps_stay_consistent(ops in proptest::collection::vec((0u8..3, 0u8..6, 0u64..50), 0..80)) {
            let mut i = Index::default();
            let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
            for (op, k, size) in ops {
                let key = vec![k];
                match op {
                    0 => { i.insert(&key, size, size); model.insert(key, size); }
                    1 => { i.remove(&key); model.remove(&key); }
                    _ => i.touch(&key),
                }
                prop_assert_eq!(i.bytes(), model.values().sum::<u64>());
                prop_assert_eq!(i.len(), model.len());
                prop_assert_eq!(i.lru.len(), model.len());
                prop_assert_eq!(i.expiry.len(), model.len());
            }
        }
    }
}
