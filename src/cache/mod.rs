//! The result cache: a hit means no upstream call at all. Entries live in a [`RecordStore`]
//! (durable, framed with a checksum) under `(tenant, namespace, key)`; every entry has a
//! TTL, every value a size cap, and the whole cache a byte budget.
//!
//! Budget and eviction: an in-memory `index` mirrors what the store holds (size, expiry,
//! recency of each entry). A put that takes the total over the budget evicts the least
//! recently used entries (reads count as use; after a restart, recency starts from each
//! entry's write time, so the oldest go first). Every change to the store happens under the
//! index's lock, so the two cannot drift apart; the lock is a std `Mutex` held only inside
//! `spawn_blocking` and only for in-memory store writes (no flush inside it). The budget
//! counts key and value bytes and the index's own per-entry memory
//! ([`types::INDEX_ENTRY_BYTES`]), not the backend's overhead (sled's space amplification
//! is measured by the soak script). Per process: in a cluster, each replica would budget
//! the entries it wrote (issue 6 decides how Redis evicts).
//!
//! Durability: a `Put` or `Delete` is answered once a [`GroupCommit`] flush covers it.
//! Evictions and sweeps are not waited for: if lost in a crash, the entries reappear and
//! the index rebuilt at start evicts or sweeps them again.
//!
//! It must not read the clock (`now_ms` is passed in, Unix milliseconds) nor know gRPC.

mod index;
mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prost::Message as _;

use crate::clock::ceil_ms;
use crate::store::keys::{self, RecordTree};
use crate::store::{GroupCommit, RecordStore, StoreError, Write};
use crate::sweeper::{Sweep, SweepReport};
use index::Index;
pub use types::{
    CacheError, Hit, MAX_KEY_LEN, MAX_NAMESPACE_LEN, MAX_TTL, MIN_TTL, Settings, Stats,
};
use types::{charge, store_key};

/// Entries read per store scan while rebuilding the index at start (each page holds the
/// values too: 128 values of the 1 MiB default cap are 128 MiB at most).
const REBUILD_PAGE: usize = 128;

/// A stored entry's payload.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct Entry {
    /// The cached value.
    #[prost(bytes = "vec", tag = "1")]
    value: Vec<u8>,
    /// When it expires (Unix ms).
    #[prost(uint64, tag = "2")]
    expires_at_ms: u64,
    /// When it was written (Unix ms): recency order after a restart.
    #[prost(uint64, tag = "3")]
    stored_at_ms: u64,
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expired_removed: AtomicU64,
    undecodable: AtomicU64,
}

/// The cache over a store. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    store: Arc<dyn RecordStore>,
    commit: GroupCommit,
    settings: Settings,
    index: Arc<Mutex<Index>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Opens the cache over `store`: reads every entry once to rebuild the index (removing
    /// damaged ones, evicting down to the budget). Blocking: run it in `spawn_blocking`.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn open(
        store: Arc<dyn RecordStore>,
        commit: GroupCommit,
        settings: Settings,
    ) -> Result<Cache, StoreError> {
        let cache = Cache {
            store,
            commit,
            settings,
            index: Arc::default(),
            counters: Arc::default(),
        };
        cache.rebuild()?;
        Ok(cache)
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The index, whether or not a previous holder panicked (each critical section leaves
    /// it consistent between store calls).
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decodes a payload, counting (and treating as absent) one that fails.
    fn decode(&self, key: &[u8], bytes: Option<&[u8]>) -> Option<Entry> {
        match Entry::decode(bytes?) {
            Ok(e) => Some(e),
            Err(error) => {
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %keys::display_key(key), %error, "undecodable cache entry reads as absent");
                None
            }
        }
    }

    /// Fills the index from the store, oldest writes first; removes what cannot be read.
    fn rebuild(&self) -> Result<(), StoreError> {
        let mut found = Vec::new();
        let mut damaged = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .scan(RecordTree::Cache, after.as_deref(), REBUILD_PAGE)?;
            let done = page.len() < REBUILD_PAGE;
            after = page.last().map(|e| e.key.clone()).or(after);
            for item in page {
                match self.decode(&item.key, item.value.as_deref()) {
                    Some(e) => found.push((
                        e.stored_at_ms,
                        charge(&item.key, e.value.len()),
                        e.expires_at_ms,
                        item.key,
                    )),
                    None => damaged.push(item.key),
                }
            }
            if done {
                break;
            }
        }
        found.sort_unstable();
        let mut index = self.index();
        for (_, size, expires_at_ms, key) in &found {
            index.insert(key, *size, *expires_at_ms);
        }
        for key in &damaged {
            // Re-checked atomically: only a still unreadable value is removed.
            let removed =
                self.store.update(
                    RecordTree::Cache,
                    key,
                    &mut |cur| match cur.map(Entry::decode) {
                        Some(Ok(_)) => Write::Keep,
                        _ => Write::Delete,
                    },
                )?;
            self.counters
                .expired_removed
                .fetch_add(u64::from(removed), Ordering::Relaxed);
        }
        self.evict_over_budget(&mut index, &[])?;
        tracing::info!(
            entries = index.len(),
            bytes = index.bytes(),
            damaged = damaged.len(),
            "cache index rebuilt"
        );
        Ok(())
    }

    /// Evicts least recently used entries (never `keep`) until within the budget.
    fn evict_over_budget(&self, index: &mut Index, keep: &[u8]) -> Result<(), StoreError> {
        while index.bytes() > self.settings.max_total_bytes {
            let Some(victim) = index.lru_victim(keep) else {
                break;
            };
            self.store
                .update(RecordTree::Cache, &victim, &mut |_| Write::Delete)?;
            index.remove(&victim);
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `Get`: the live entry under `(namespace, key)`, if any. Counts a hit or a miss.
    ///
    /// # Errors
    /// [`CacheError::Invalid`] for a bad namespace or key; store failures.
    pub async fn get(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Hit>, CacheError> {
        let skey = store_key(tenant, namespace, key)?;
        let this = self.clone();
        let hit = tokio::task::spawn_blocking(move || {
            let raw = this.store.get(RecordTree::Cache, &skey)?;
            let hit = this
                .decode(&skey, raw.as_deref())
                .filter(|e| now_ms < e.expires_at_ms)
                .map(|e| Hit {
                    value: e.value,
                    expires_at_ms: e.expires_at_ms,
                });
            if hit.is_some() {
                this.index().touch(&skey);
            }
            Ok::<_, StoreError>(hit)
        })
        .await??;
        let counter = if hit.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(hit)
    }

    /// `Put`: stores `value` for `ttl` (`None` = the default), evicting least recently used
    /// entries if the budget requires; durable when it returns. Returns the expiry (Unix
    /// ms).
    ///
    /// # Errors
    /// [`CacheError::Invalid`] for a bad namespace, key or TTL, or a value over the cap;
    /// store failures.
    pub async fn put(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<u64, CacheError> {
        let skey = store_key(tenant, namespace, key)?;
        if value.len() > self.settings.max_value_bytes {
            return Err(CacheError::Invalid {
                field: "value",
                message: format!(
                    "{} bytes, at most {} allowed",
                    value.len(),
                    self.settings.max_value_bytes
                ),
            });
        }
        let ttl = ttl.unwrap_or(self.settings.default_ttl);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(CacheError::Invalid {
                field: "ttl",
                message: format!(
                    "{} is out of range [{}, {}]",
                    humantime::format_duration(ttl),
                    humantime::format_duration(MIN_TTL),
                    humantime::format_duration(MAX_TTL)
                ),
            });
        }
        let expires_at_ms = now_ms.saturating_add(ceil_ms(ttl));
        let size = charge(&skey, value.len());
        let payload = Entry {
            value,
            expires_at_ms,
            stored_at_ms: now_ms,
        }
        .encode_to_vec();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut index = this.index();
            this.store.update(RecordTree::Cache, &skey, &mut |_| {
                Write::Put(payload.clone())
            })?;
            index.insert(&skey, size, expires_at_ms);
            this.evict_over_budget(&mut index, &skey)
        })
        .await??;
        self.commit.durable().await?;
        Ok(expires_at_ms)
    }

    /// `Delete`: removes the entry; returns whether a live one was there. Durable when it
    /// returns.
    ///
    /// # Errors
    /// [`CacheError::Invalid`] for a bad namespace or key; store failures.
    pub async fn delete(
        &self,
        tenant: &str,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<bool, CacheError> {
        let skey = store_key(tenant, namespace, key)?;
        let this = self.clone();
        let (live, changed) = tokio::task::spawn_blocking(move || {
            let mut index = this.index();
            let mut live = false;
            let changed = this.store.update(RecordTree::Cache, &skey, &mut |cur| {
                live = cur
                    .and_then(|b| Entry::decode(b).ok())
                    .is_some_and(|e| now_ms < e.expires_at_ms);
                Write::Delete
            })?;
            index.remove(&skey);
            Ok::<_, StoreError>((live, changed))
        })
        .await??;
        if changed {
            self.commit.durable().await?;
        }
        Ok(live)
    }

    /// Counters and current size.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (entries, bytes) = {
            let index = self.index();
            (
                u64::try_from(index.len()).unwrap_or(u64::MAX),
                index.bytes(),
            )
        };
        Stats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            evictions: load(&c.evictions),
            expired_removed: load(&c.expired_removed),
            entries,
            bytes,
            max_total_bytes: self.settings.max_total_bytes,
            corrupt_values: self
                .store
                .corrupt_values()
                .saturating_add(load(&c.undecodable)),
        }
    }
}

impl Sweep for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    /// Removes up to `sweep_batch` expired entries, earliest expiry first (found through
    /// the index: no store scan). An entry rewritten meanwhile is kept.
    fn sweep_batch(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        let limit = self.settings.sweep_batch.max(1);
        let mut index = self.index();
        let expired = index.expired(now_ms, limit);
        let mut removed = 0u64;
        for key in &expired {
            let changed =
                self.store.update(
                    RecordTree::Cache,
                    key,
                    &mut |cur| match cur.map(Entry::decode) {
                        Some(Ok(e)) if now_ms < e.expires_at_ms => Write::Keep,
                        _ => Write::Delete,
                    },
                )?;
            index.remove(key);
            removed += u64::from(changed);
        }
        self.counters
            .expired_removed
            .fetch_add(removed, Ordering::Relaxed);
        Ok(SweepReport {
            examined: expired.len(),
            removed,
            done: expired.len() < limit,
        })
    }
}

#[cfg(test)]
mod tests;
