//! Conformance bodies for [`RecordStore`]: atomic read-modify-write, reads, paged scans,
//! damage handling and tree separation. The `store_conformance!` macro in the parent runs
//! each on every backend; sled-only behaviour (reopen, exit without drop) is at the bottom.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use crate::store::keys::RecordTree::{self, Cache, Idempotency};
use crate::store::{MemoryStore, RecordStore, RedisStore, ResourceStore, SledStore, Write, codec};

/// A record backend under test, with a way to plant damage behind the codec's back.
pub(super) trait RecordSubject: RecordStore + ResourceStore {
    /// Stores `raw` under `key` in `tree` exactly as given (no framing).
    fn inject_raw_record(&self, tree: RecordTree, key: &[u8], raw: &[u8]);
}

impl RecordSubject for MemoryStore {
    fn inject_raw_record(&self, tree: RecordTree, key: &[u8], raw: &[u8]) {
        self.insert_raw_record(tree, key, raw);
    }
}

impl RecordSubject for SledStore {
    fn inject_raw_record(&self, tree: RecordTree, key: &[u8], raw: &[u8]) {
        self.insert_raw_record(tree, key, raw).expect("raw insert");
    }
}

impl RecordSubject for RedisStore {
    fn inject_raw_record(&self, tree: RecordTree, key: &[u8], raw: &[u8]) {
        self.insert_raw_record(tree, key, raw).expect("raw insert");
    }
}

/// `update` with a closure that ignores the current value.
pub(super) fn set(s: &impl RecordSubject, tree: RecordTree, key: &[u8], w: &Write) -> bool {
    s.update(tree, key, &mut |_| w.clone()).expect("update")
}

/// Every (key, payload) of a tree, paging through `scan` `page` entries at a time.
pub(super) fn all(
    s: &impl RecordSubject,
    tree: RecordTree,
    page: usize,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = s.scan(tree, after.as_deref(), page).expect("scan");
        let done = batch.len() < page;
        after = batch.last().map(|e| e.key.clone()).or(after);
        out.extend(batch.into_iter().map(|e| (e.key, e.value)));
        if done {
            return out;
        }
    }
}

/// Proves put, get, replace and delete through `update`, and what each reports.
pub(super) fn check_update_put_get_delete(s: &impl RecordSubject) {
    assert_eq!(s.get(Idempotency, b"k").expect("get"), None);
    assert!(set(s, Idempotency, b"k", &Write::Put(b"v1".to_vec())));
    assert_eq!(s.get(Idempotency, b"k").expect("get"), Some(b"v1".to_vec()));
    assert!(set(s, Idempotency, b"k", &Write::Put(b"v2".to_vec())));
    assert_eq!(s.get(Idempotency, b"k").expect("get"), Some(b"v2".to_vec()));
    assert!(set(s, Idempotency, b"k", &Write::Delete));
    assert_eq!(s.get(Idempotency, b"k").expect("get"), None);
    assert_eq!(RecordStore::corrupt_values(s), 0);
}

/// Proves `Keep` writes nothing and deleting an absent key reports no change.
pub(super) fn check_keep_and_absent_delete_change_nothing(s: &impl RecordSubject) {
    assert!(!set(s, Cache, b"k", &Write::Keep));
    assert!(!set(s, Cache, b"k", &Write::Delete));
    assert_eq!(s.get(Cache, b"k").expect("get"), None);
    set(s, Cache, b"k", &Write::Put(b"v".to_vec()));
    assert!(!set(s, Cache, b"k", &Write::Keep));
    assert_eq!(s.get(Cache, b"k").expect("get"), Some(b"v".to_vec()));
    s.flush().expect("flush");
}

/// Proves the closure sees the current payload (absent first, then what was written).
pub(super) fn check_update_sees_current_value(s: &impl RecordSubject) {
    let mut seen = Vec::new();
    for next in [b"a".to_vec(), b"b".to_vec()] {
        s.update(Idempotency, b"k", &mut |cur| {
            seen.push(cur.map(<[u8]>::to_vec));
            Write::Put(next.clone())
        })
        .expect("update");
    }
    assert_eq!(seen, [None, Some(b"a".to_vec())]);
}

/// Proves concurrent read-modify-writes of one key lose no update: 8 threads x 50
/// increments of a counter end at 400.
pub(super) fn check_concurrent_updates_are_atomic(s: &impl RecordSubject) {
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    s.update(Cache, b"counter", &mut |cur| {
                        let n = cur.map_or(0, |b| u64::from_le_bytes(b.try_into().expect("u64")));
                        Write::Put((n + 1).to_le_bytes().to_vec())
                    })
                    .expect("update");
                }
            });
        }
    });
    let n = s.get(Cache, b"counter").expect("get").expect("present");
    assert_eq!(u64::from_le_bytes(n.try_into().expect("u64")), 400);
}

/// Proves 32 concurrent "claim if absent" updates of one key have exactly one winner.
pub(super) fn check_concurrent_claims_have_one_winner(s: &impl RecordSubject) {
    let winners = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32u8)
            .map(|i| {
                scope.spawn(move || {
                    let mut won = false;
                    s.update(Idempotency, b"claim", &mut |cur| {
                        won = cur.is_none();
                        if won {
                            Write::Put(vec![i])
                        } else {
                            Write::Keep
                        }
                    })
                    .expect("update");
                    won
                })
            })
            .collect();
        let joined: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect();
        joined.into_iter().filter(|won| *won).count()
    });
    assert_eq!(winners, 1);
}

/// Proves scans return keys in byte order, start strictly after the cursor, stop at the
/// limit, and that paging with any page size visits every key exactly once.
pub(super) fn check_scan_pages_in_key_order(s: &impl RecordSubject) {
    let keys: Vec<Vec<u8>> = vec![
        b"b".to_vec(),
        b"a".to_vec(),
        vec![0],
        vec![0xff],
        b"ab".to_vec(),
    ];
    for k in &keys {
        set(s, Cache, k, &Write::Put(k.clone()));
    }
    let mut sorted = keys.clone();
    sorted.sort();
    let first = s.scan(Cache, None, 2).expect("scan");
    assert_eq!(
        first.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        sorted[..2]
    );
    let next = s.scan(Cache, Some(b"a"), 10).expect("scan");
    assert_eq!(
        next.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        sorted[2..]
    );
    assert_eq!(s.scan(Cache, Some(&[0xff]), 10).expect("scan"), vec![]);
    for page in 1..=6 {
        let listed = all(s, Cache, page);
        let expected: Vec<_> = sorted
            .iter()
            .map(|k| (k.clone(), Some(k.clone())))
            .collect();
        assert_eq!(listed, expected, "page size {page}");
    }
}

/// Proves the trees are separate key spaces, and separate from resources.
pub(super) fn check_trees_are_separate(s: &impl RecordSubject) {
    set(s, Idempotency, b"k", &Write::Put(b"i".to_vec()));
    set(s, Cache, b"k", &Write::Put(b"c".to_vec()));
    s.put_resource("k", b"r").expect("put resource");
    assert_eq!(s.get(Idempotency, b"k").expect("get"), Some(b"i".to_vec()));
    assert_eq!(s.get(Cache, b"k").expect("get"), Some(b"c".to_vec()));
    set(s, Cache, b"k", &Write::Delete);
    assert_eq!(s.get(Idempotency, b"k").expect("get"), Some(b"i".to_vec()));
    assert_eq!(all(s, Cache, 10), vec![]);
    assert_eq!(
        s.list_resources().expect("list"),
        vec![("k".into(), b"r".to_vec())]
    );
}

/// Proves a damaged record reads as absent everywhere, is counted once, shows in scans as
/// `None`, is reported by `is_damaged` (so a caller can fail closed), and that a write over
/// it repairs the key.
pub(super) fn check_corrupt_record_absent_and_counted(s: &impl RecordSubject) {
    let mut flipped = codec::encode(b"payload");
    flipped[codec::HEADER_LEN] ^= 0x04;
    s.inject_raw_record(Idempotency, b"bad", &flipped);
    s.inject_raw_record(Idempotency, b"short", b"\x01\x02");
    set(s, Idempotency, b"good", &Write::Put(b"v".to_vec()));
    assert_eq!(s.get(Idempotency, b"bad").expect("get"), None);
    assert_eq!(s.get(Idempotency, b"bad").expect("get"), None);
    assert_eq!(RecordStore::corrupt_values(s), 1);
    // Absent and damaged are told apart, for callers that must fail closed.
    assert!(s.is_damaged(Idempotency, b"bad"));
    assert!(!s.is_damaged(Idempotency, b"good"));
    assert!(!s.is_damaged(Idempotency, b"never-written"));
    let listed = all(s, Idempotency, 10);
    assert_eq!(
        listed,
        vec![
            (b"bad".to_vec(), None),
            (b"good".to_vec(), Some(b"v".to_vec())),
            (b"short".to_vec(), None),
        ]
    );
    assert_eq!(RecordStore::corrupt_values(s), 2);
    let mut saw = Some(Some(Vec::new()));
    s.update(Idempotency, b"bad", &mut |cur| {
        saw = Some(cur.map(<[u8]>::to_vec));
        Write::Put(b"fixed".to_vec())
    })
    .expect("update");
    assert_eq!(saw, Some(None), "damage must read as absent");
    assert!(!s.is_damaged(Idempotency, b"bad"), "repaired by the write");
    assert_eq!(
        s.get(Idempotency, b"bad").expect("get"),
        Some(b"fixed".to_vec())
    );
    // Removing the other damaged entry is a change: the bytes were there.
    assert!(set(s, Idempotency, b"short", &Write::Delete));
    assert_eq!(all(s, Idempotency, 10).len(), 2);
    assert_eq!(RecordStore::corrupt_values(s), 2);
}

/// Proves payloads come back byte for byte: empty, every byte value, 1 MiB.
pub(super) fn check_payloads_round_trip(s: &impl RecordSubject) {
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| i.wrapping_mul(7).to_le_bytes()[0])
        .collect();
    let cases = [Vec::new(), (0..=255).collect(), big];
    for (i, v) in cases.iter().enumerate() {
        set(
            s,
            Cache,
            &[u8::try_from(i).expect("small")],
            &Write::Put(v.clone()),
        );
    }
    for (i, v) in cases.iter().enumerate() {
        let got = s
            .get(Cache, &[u8::try_from(i).expect("small")])
            .expect("get");
        assert_eq!(got.as_ref(), Some(v));
    }
}

/// One step of the record model check.
#[derive(Debug, Clone)]
pub(super) enum RecordOp {
    /// Put this payload under this key.
    Put(u8, Vec<u8>),
    /// Delete the key.
    Delete(u8),
    /// Append a byte to the current value if present (a read-modify-write).
    Append(u8, u8),
}

/// Random record operations over a handful of keys.
pub(super) fn record_op() -> impl Strategy<Value = RecordOp> {
    prop_oneof![
        (0u8..4, proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(k, v)| RecordOp::Put(k, v)),
        (0u8..4).prop_map(RecordOp::Delete),
        (0u8..4, any::<u8>()).prop_map(|(k, b)| RecordOp::Append(k, b)),
    ]
}

/// Proves a random schedule of updates matches a `BTreeMap` model: change flags, reads
/// and the full scan alike.
pub(super) fn check_records_match_model(
    s: &impl RecordSubject,
    ops: &[RecordOp],
) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for op in ops {
        let (key, changed, expect) = match op {
            RecordOp::Put(k, v) => {
                let changed = set(s, Cache, &[*k], &Write::Put(v.clone()));
                model.insert(vec![*k], v.clone());
                (*k, changed, true)
            }
            RecordOp::Delete(k) => {
                let changed = set(s, Cache, &[*k], &Write::Delete);
                (*k, changed, model.remove(&vec![*k]).is_some())
            }
            RecordOp::Append(k, b) => {
                let changed = s
                    .update(Cache, &[*k], &mut |cur| match cur {
                        Some(v) => Write::Put([v, &[*b]].concat()),
                        None => Write::Keep,
                    })
                    .expect("update");
                let present = model.get_mut(&vec![*k]).map(|v| v.push(*b)).is_some();
                (*k, changed, present)
            }
        };
        prop_assert_eq!(changed, expect);
        prop_assert_eq!(
            s.get(Cache, &[key]).expect("get"),
            model.get(&vec![key]).cloned()
        );
    }
    let expected: Vec<_> = model.into_iter().map(|(k, v)| (k, Some(v))).collect();
    prop_assert_eq!(all(s, Cache, 3), expected);
    Ok(())
}

// ---- sled only ----

/// Opens `dir` or panics with the error chain.
fn open(dir: &Path) -> SledStore {
    // Reopens follow a drop; sled frees the lock a moment later, from its own threads.
    SledStore::open_within(dir, std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("open {}: {e:?}", dir.display()))
}

/// Proves records written and flushed survive closing and reopening the directory.
#[test]
fn sled_reopen_keeps_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        set(&s, Idempotency, b"i", &Write::Put(b"1".to_vec()));
        set(&s, Cache, b"c", &Write::Put(b"2".to_vec()));
        set(&s, Cache, b"gone", &Write::Put(b"3".to_vec()));
        set(&s, Cache, b"gone", &Write::Delete);
        s.flush().expect("flush");
    }
    let s = open(dir.path());
    assert_eq!(
        all(&s, Idempotency, 10),
        vec![(b"i".to_vec(), Some(b"1".to_vec()))]
    );
    assert_eq!(
        all(&s, Cache, 10),
        vec![(b"c".to_vec(), Some(b"2".to_vec()))]
    );
}

/// Set (to a directory) only in the child process of `sled_flushed_records_survive_exit`.
const EXIT_CHILD_DIR: &str = "PERMITD_RECORDS_TEST_EXIT_CHILD_DIR";
/// Exit code by which the child shows it got past its writes.
const EXIT_CHILD_CODE: i32 = 43;

/// Child half of `sled_flushed_records_survive_exit` (a no-op when run normally): updates,
/// flushes once, then exits without running destructors (no drop-time flush, like kill -9).
#[test]
fn sled_records_exit_child() {
    let Some(dir) = std::env::var_os(EXIT_CHILD_DIR) else {
        return;
    };
    let s = open(Path::new(&dir));
    for i in 0..100u8 {
        set(&s, Cache, &[i], &Write::Put(vec![i; 100]));
    }
    set(&s, Idempotency, b"k", &Write::Put(b"v".to_vec()));
    s.flush().expect("flush");
    std::process::exit(EXIT_CHILD_CODE);
}

/// Proves one flush makes every record update before it durable: a process that exits
/// right after the flush, without dropping the store, loses none of them.
#[test]
fn sled_flushed_records_survive_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "store::conformance::records::sled_records_exit_child",
        ])
        .args(["--test-threads=1", "--nocapture"])
        .env(EXIT_CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run child");
    assert_eq!(
        status.code(),
        Some(EXIT_CHILD_CODE),
        "child did not finish its writes"
    );
    let s = open(dir.path());
    let cache = all(&s, Cache, 1000);
    assert_eq!(cache.len(), 100);
    assert!(
        cache
            .iter()
            .all(|(k, v)| v.as_deref() == Some(&[k[0]; 100][..]))
    );
    assert_eq!(s.get(Idempotency, b"k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(RecordStore::corrupt_values(&s), 0);
}
