//! Tests of [`Cache`] over a real store: TTL, caps, budget eviction, counters, the index
//! rebuilt from the store, and the sweeper.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::{MemoryStore, SledStore};

const T: &str = keys::DEFAULT_TENANT;

fn open(store: Arc<dyn RecordStore>, settings: Settings) -> (Cache, GroupCommit) {
    let commit = GroupCommit::start(Arc::clone(&store)).unwrap();
    (
        Cache::open(store, commit.clone(), settings).unwrap(),
        commit,
    )
}

fn memory(settings: Settings) -> (Cache, GroupCommit) {
    open(Arc::new(MemoryStore::new()), settings)
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

/// Proves put, get (a hit with the value and expiry), delete, and a miss after it, with
/// the counters following.
#[tokio::test]
async fn put_get_delete_and_counters() {
    let (c, commit) = memory(Settings::default());
    assert_eq!(c.get(T, "ns", "k", 0).await.unwrap(), None);
    let flushes = commit.flushes();
    let exp = c
        .put(T, "ns", "k", b"v".to_vec(), secs(10), 1_000)
        .await
        .unwrap();
    assert_eq!(exp, 11_000);
    assert!(commit.flushes() > flushes, "put waited for a flush");
    let hit = c.get(T, "ns", "k", 2_000).await.unwrap().unwrap();
    assert_eq!((hit.value, hit.expires_at_ms), (b"v".to_vec(), 11_000));
    assert!(c.get(T, "other", "k", 2_000).await.unwrap().is_none());
    assert!(c.delete(T, "ns", "k", 3_000).await.unwrap());
    assert!(!c.delete(T, "ns", "k", 3_000).await.unwrap());
    assert!(c.get(T, "ns", "k", 3_000).await.unwrap().is_none());
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.entries, s.bytes), (1, 3, 0, 0));
    commit.close();
}

/// Proves an entry is a miss from its expiry on, before any sweep, and that the default
/// TTL applies when none is given.
#[tokio::test]
async fn ttl_expiry_and_default() {
    let (c, commit) = memory(Settings::default());
    c.put(
        T,
        "ns",
        "k",
        b"v".to_vec(),
        Some(Duration::from_millis(5)),
        0,
    )
    .await
    .unwrap();
    assert!(c.get(T, "ns", "k", 4).await.unwrap().is_some());
    assert!(c.get(T, "ns", "k", 5).await.unwrap().is_none());
    assert!(
        !c.delete(T, "ns", "k", 5).await.unwrap(),
        "an expired entry is not live"
    );
    let exp = c.put(T, "ns", "d", b"v".to_vec(), None, 0).await.unwrap();
    assert_eq!(exp, 3_600_000);
    commit.close();
}

/// Proves the value cap (exactly the cap is fine, one byte more is refused), and bad
/// names and TTLs are refused naming the field, storing nothing.
#[tokio::test]
async fn caps_and_bad_input() {
    let settings = Settings {
        max_value_bytes: 100,
        ..Settings::default()
    };
    let (c, commit) = memory(settings);
    let field = |e: CacheError| match e {
        CacheError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    c.put(T, "ns", "k", vec![0; 100], None, 0).await.unwrap();
    let e = c
        .put(T, "ns", "k2", vec![0; 101], None, 0)
        .await
        .unwrap_err();
    assert_eq!(field(e), "value");
    let cases = [
        ("", "k", secs(1), "namespace"),
        (&*"n".repeat(201), "k", secs(1), "namespace"),
        ("ns", "", secs(1), "key"),
        ("ns", &*"k".repeat(256), secs(1), "key"),
        ("ns", "a\u{0}b", secs(1), "key"),
        ("ns", "k", Some(Duration::ZERO), "ttl"),
        ("ns", "k", Some(MAX_TTL + Duration::from_secs(1)), "ttl"),
    ];
    for (ns, key, ttl, want) in cases {
        let e = c.put(T, ns, key, b"v".to_vec(), ttl, 0).await.unwrap_err();
        assert_eq!(field(e), want, "{ns:?} {key:?}");
    }
    assert_eq!(c.stats().entries, 1);
    commit.close();
}

/// Proves eviction under a small budget removes least recently used entries first (a
/// read refreshes an entry), counts them, and keeps the total within the budget.
#[tokio::test]
async fn lru_eviction_under_budget() {
    // Each entry: key "\x07default\x02ns" + 1 byte = 12, value 88, index 200: 300 bytes.
    let settings = Settings {
        max_total_bytes: 900,
        max_value_bytes: 100,
        ..Settings::default()
    };
    let (c, commit) = memory(settings);
    for k in ["a", "b", "c"] {
        c.put(T, "ns", k, vec![1; 88], secs(60), 0).await.unwrap();
    }
    assert_eq!(c.stats().bytes, 900);
    assert!(c.get(T, "ns", "a", 1).await.unwrap().is_some());
    c.put(T, "ns", "d", vec![1; 88], secs(60), 2).await.unwrap();
    assert!(
        c.get(T, "ns", "b", 3).await.unwrap().is_none(),
        "b was least recently used"
    );
    for k in ["a", "c", "d"] {
        assert!(c.get(T, "ns", k, 3).await.unwrap().is_some(), "{k}");
    }
    let s = c.stats();
    assert_eq!((s.evictions, s.entries, s.bytes), (1, 3, 900));
    commit.close();
}

/// Proves the sweeper removes expired entries in bounded batches, earliest first, and
/// leaves live ones.
#[tokio::test]
async fn sweep_removes_expired_in_batches() {
    let settings = Settings {
        sweep_batch: 2,
        ..Settings::default()
    };
    let store = Arc::new(MemoryStore::new());
    let (c, commit) = open(store.clone(), settings);
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        let ttl = Duration::from_millis(10 + u64::try_from(i).unwrap());
        c.put(T, "ns", k, b"v".to_vec(), Some(ttl), 0)
            .await
            .unwrap();
    }
    c.put(T, "ns", "live", b"v".to_vec(), secs(60), 0)
        .await
        .unwrap();
    let first = c.sweep_batch(100).unwrap();
    assert_eq!((first.examined, first.removed, first.done), (2, 2, false));
    let second = c.sweep_batch(100).unwrap();
    assert_eq!((second.examined, second.removed, second.done), (1, 1, true));
    assert_eq!(store.scan(RecordTree::Cache, None, 10).unwrap().len(), 1);
    let s = c.stats();
    assert_eq!((s.expired_removed, s.entries), (3, 1));
    commit.close();
}

/// Proves reopening rebuilds the index from the store: entries and bytes survive, the
/// oldest writes are evicted first under a smaller budget, and damaged entries are
/// removed and counted.
#[tokio::test]
async fn reopen_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn RecordStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let (c, commit) = open(store, Settings::default());
        // 3-byte keys: 11 + 3 + 88 + 200 (index) = 302 bytes each.
        for (i, k) in ["old", "mid", "new"].iter().enumerate() {
            let now = u64::try_from(i).unwrap();
            c.put(T, "ns", k, vec![7; 88], secs(60), now).await.unwrap();
        }
        commit.close();
    }
    let sled = SledStore::open_within(dir.path(), Duration::from_secs(10)).unwrap();
    sled.insert_raw_record(RecordTree::Cache, b"\x07default\x02nsbad", b"junk")
        .unwrap();
    let store: Arc<dyn RecordStore> = Arc::new(sled);
    let small = Settings {
        max_total_bytes: 700,
        max_value_bytes: 100,
        ..Settings::default()
    };
    let (c, commit) = open(Arc::clone(&store), small);
    let s = c.stats();
    assert_eq!(
        (s.entries, s.bytes, s.evictions, s.corrupt_values),
        (2, 604, 1, 1)
    );
    assert!(c.get(T, "ns", "old", 10).await.unwrap().is_none());
    assert_eq!(
        c.get(T, "ns", "new", 10).await.unwrap().unwrap().value,
        vec![7; 88]
    );
    assert_eq!(store.scan(RecordTree::Cache, None, 10).unwrap().len(), 2);
    commit.close();
}
