//! The store conformance suite: one body per behaviour, run on every backend by
//! [`store_conformance!`], so backends cannot disagree on what a put, a delete, a list or a
//! damaged value means. A backend joins with one macro line and a [`Subject`] impl;
//! behaviour only one backend has (sled reopening its directory, Redis shared by two
//! replicas or going away) is tested below the macro lines.
//!
//! The Redis bodies share one `redis-server` per test binary (started on first use, see
//! [`permitd_testkit::RedisServer`]), each store under a key prefix of its own. Without
//! `redis-server` installed they print a skip notice and pass, except under `CI=true`. The
//! Redis Cluster bodies likewise share one three-node cluster per test binary
//! ([`permitd_testkit::RedisCluster`]), opened through its seed list. The
//! [`super::RecordStore`] bodies live in [`records`] and run from the same macro.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use tempfile::TempDir;

use super::{MemoryStore, OpenHint, RedisStore, ResourceStore, SledStore, StoreError, codec};
use permitd_testkit::{RedisCluster, RedisServer};

mod records;
use records::*;

/// A backend under test: the trait plus a way to plant damage behind the codec's back.
trait Subject: ResourceStore {
    /// Stores `raw` under the resource key `key` exactly as given (no framing).
    fn inject_raw(&self, key: &[u8], raw: &[u8]);
}

impl Subject for MemoryStore {
    fn inject_raw(&self, key: &[u8], raw: &[u8]) {
        self.insert_raw_resource(key, raw);
    }
}

impl Subject for SledStore {
    fn inject_raw(&self, key: &[u8], raw: &[u8]) {
        self.insert_raw_resource(key, raw).expect("raw insert");
    }
}

impl Subject for RedisStore {
    fn inject_raw(&self, key: &[u8], raw: &[u8]) {
        self.insert_raw_resource(key, raw).expect("raw insert");
    }
}

/// A store plus whatever must outlive it (a temporary directory).
struct Fixture<S> {
    store: S,
    _dir: Option<TempDir>,
}

fn memory() -> Fixture<MemoryStore> {
    Fixture {
        store: MemoryStore::new(),
        _dir: None,
    }
}

fn sled() -> Fixture<SledStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    // A subdirectory that does not exist yet: open must create it.
    let store = SledStore::open(&dir.path().join("data")).expect("open sled");
    Fixture {
        store,
        _dir: Some(dir),
    }
}

/// Timeout of every Redis call in these tests: generous for a loaded CI machine.
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);

/// The redis-server shared by this test binary, or `None` when it is not installed.
fn shared_redis() -> Option<&'static RedisServer> {
    static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| RedisServer::for_test("store conformance on redis"))
        .as_ref()
}

/// A key prefix no other store in this test binary uses.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{test}#{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A fresh, empty Redis store for `test` on the shared server, or `None` (with a skip
/// notice) when redis-server is not installed.
fn redis(test: &str) -> Option<Fixture<RedisStore>> {
    let Some(server) = shared_redis() else {
        eprintln!("SKIP {test}: redis-server not installed");
        return None;
    };
    let store = RedisStore::open(&server.url(), &unique_prefix(test), REDIS_TIMEOUT)
        .unwrap_or_else(|e| panic!("open redis store: {e:?}"));
    Some(Fixture { store, _dir: None })
}

/// The Redis Cluster shared by this test binary, or `None` when redis-server or redis-cli
/// is not installed.
fn shared_cluster() -> Option<&'static RedisCluster> {
    static CLUSTER: OnceLock<Option<RedisCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| RedisCluster::for_test("store conformance on a redis cluster"))
        .as_ref()
}

/// A fresh, empty Redis store for `test` on the shared cluster (opened through its seed
/// list), or `None` (with a skip notice) when Redis is not installed.
fn redis_cluster(test: &str) -> Option<Fixture<RedisStore>> {
    let Some(cluster) = shared_cluster() else {
        eprintln!("SKIP {test}: redis-server or redis-cli not installed");
        return None;
    };
    let store = RedisStore::open(&cluster.url_list(), &unique_prefix(test), REDIS_TIMEOUT)
        .unwrap_or_else(|e| panic!("open redis cluster store: {e:?}"));
    Some(Fixture { store, _dir: None })
}

/// Names in the order `list_resources` must return them.
fn names(store: &(impl ResourceStore + ?Sized)) -> Vec<String> {
    let listed = store.list_resources().expect("list");
    listed.into_iter().map(|(name, _)| name).collect()
}

/// Proves put reports insert vs replace, delete reports existence, list is in name order.
fn check_put_replace_delete_list_order(s: &impl Subject) {
    assert_eq!(s.list_resources().expect("list"), vec![]);
    assert!(!s.put_resource("b", b"1").expect("put"));
    assert!(!s.put_resource("a", b"2").expect("put"));
    assert!(!s.put_resource("ä", b"3").expect("put"));
    assert!(!s.put_resource("A", b"4").expect("put"));
    assert!(s.put_resource("b", b"5").expect("replace"));
    assert_eq!(names(s), ["A", "a", "b", "ä"]);
    assert_eq!(
        s.list_resources().expect("list")[2],
        ("b".into(), b"5".to_vec())
    );
    assert!(s.delete_resource("a").expect("delete"));
    assert!(!s.delete_resource("a").expect("delete again"));
    assert_eq!(names(s), ["A", "b", "ä"]);
    assert_eq!(s.corrupt_values(), 0);
}

/// Proves deleting a name that was never stored returns false and changes nothing.
fn check_delete_missing_is_false(s: &impl Subject) {
    assert!(!s.delete_resource("never").expect("delete"));
    s.put_resource("kept", b"v").expect("put");
    assert!(!s.delete_resource("never").expect("delete"));
    assert_eq!(names(s), ["kept"]);
}

/// Proves names and values come back byte for byte: empty, every byte value, 1 MiB.
fn check_values_round_trip(s: &impl Subject) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| i.wrapping_mul(31).to_le_bytes()[1])
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("", b"empty name".to_vec()),
        ("empty", vec![]),
        ("all-bytes", all_bytes),
        ("big", big),
        ("日本/ß\n\t\"", b"\0\xff".to_vec()),
    ];
    for (name, value) in &cases {
        s.put_resource(name, value).expect("put");
    }
    let mut expected: Vec<(String, Vec<u8>)> =
        cases.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    expected.sort();
    assert_eq!(s.list_resources().expect("list"), expected);
}

/// Proves a damaged value is skipped, counted once, absent for put and delete, and that a
/// good write over it counts nothing more.
fn check_corrupt_value_skipped_and_counted(s: &impl Subject) {
    s.put_resource("good", b"v").expect("put");
    let mut flipped = codec::encode(b"payload");
    flipped[codec::HEADER_LEN] ^= 0x40;
    s.inject_raw(b"bad", &flipped);
    s.inject_raw(b"short", b"\x01");
    assert_eq!(names(s), ["good"]);
    assert_eq!(s.corrupt_values(), 2);
    // Listing again sees the same damage: not counted again.
    assert_eq!(names(s), ["good"]);
    assert_eq!(s.corrupt_values(), 2);
    // Damage reads as absent: overwriting it is not a "replace", removing it not "existed".
    assert!(!s.put_resource("bad", b"fixed").expect("put"));
    assert!(!s.delete_resource("short").expect("delete"));
    assert_eq!(names(s), ["bad", "good"]);
    assert_eq!(s.corrupt_values(), 2);
}

/// Proves a key that is not UTF-8 is skipped and counted like a damaged value.
fn check_non_utf8_key_skipped_and_counted(s: &impl Subject) {
    s.inject_raw(&[b'x', 0xff], &codec::encode(b"v"));
    s.put_resource("y", b"v").expect("put");
    assert_eq!(names(s), ["y"]);
    assert_eq!(s.corrupt_values(), 1);
}

/// Proves concurrent puts of one new name report exactly one insert: the store's
/// insert-or-replace is atomic, never a get then a set.
fn check_concurrent_puts_insert_once(s: &impl Subject) {
    let inserts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| scope.spawn(move || s.put_resource("shared", &[i]).expect("put")))
            .collect();
        let joined = handles.into_iter().map(|h| h.join().expect("join"));
        joined.filter(|replaced| !replaced).count()
    });
    assert_eq!(inserts, 1);
    assert_eq!(names(s), ["shared"]);
}

/// One step of the model check.
#[derive(Debug, Clone)]
enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

fn op() -> impl Strategy<Value = Op> {
    let name = prop_oneof![Just(String::new()), "[a-c]{1,2}", "[äß日]"];
    prop_oneof![
        (name.clone(), proptest::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(n, v)| Op::Put(n, v)),
        name.prop_map(Op::Delete),
    ]
}

/// Proves a random schedule of puts and deletes matches a `BTreeMap` reference model,
/// return values and listing alike.
fn check_matches_model(s: &impl Subject, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(n, v) => {
                let replaced = s.put_resource(n, v).expect("put");
                prop_assert_eq!(replaced, model.insert(n.clone(), v.clone()).is_some());
            }
            Op::Delete(n) => {
                let existed = s.delete_resource(n).expect("delete");
                prop_assert_eq!(existed, model.remove(n).is_some());
            }
        }
    }
    let expected: Vec<(String, Vec<u8>)> = model.into_iter().collect();
    prop_assert_eq!(s.list_resources().expect("list"), expected);
    Ok(())
}

/// Runs every conformance body against one backend, built fresh per test by `$make`
/// (given the test's name; `None` skips the test: its prerequisite is not installed).
macro_rules! store_conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            /// Proves put/replace/delete results and name-ordered listing on this backend.
            #[test]
            fn put_replace_delete_list_order() {
                let Some(f) = $make(concat!(stringify!($backend), "::put_replace_delete_list_order")) else {
                    return;
                };
                check_put_replace_delete_list_order(&f.store);
            }

            /// Proves deleting a missing name returns false on this backend.
            #[test]
            fn delete_missing_is_false() {
                let Some(f) = $make(concat!(stringify!($backend), "::delete_missing_is_false")) else {
                    return;
                };
                check_delete_missing_is_false(&f.store);
            }

            /// Proves names and values round-trip byte for byte on this backend.
            #[test]
            fn values_round_trip() {
                let Some(f) = $make(concat!(stringify!($backend), "::values_round_trip")) else {
                    return;
                };
                check_values_round_trip(&f.store);
            }

            /// Proves damaged values are skipped, counted once and absent on this backend.
            #[test]
            fn corrupt_value_skipped_and_counted() {
                let Some(f) = $make(concat!(stringify!($backend), "::corrupt_value_skipped_and_counted")) else {
                    return;
                };
                check_corrupt_value_skipped_and_counted(&f.store);
            }

            /// Proves non-UTF-8 keys are skipped and counted on this backend.
            #[test]
            fn non_utf8_key_skipped_and_counted() {
                let Some(f) = $make(concat!(stringify!($backend), "::non_utf8_key_skipped_and_counted")) else {
                    return;
                };
                check_non_utf8_key_skipped_and_counted(&f.store);
            }

            /// Proves concurrent puts of one name report one insert on this backend.
            #[test]
            fn concurrent_puts_insert_once() {
                let Some(f) = $make(concat!(stringify!($backend), "::concurrent_puts_insert_once")) else {
                    return;
                };
                check_concurrent_puts_insert_once(&f.store);
            }

            /// Proves record put/get/replace/delete through update on this backend.
            #[test]
            fn update_put_get_delete() {
                let Some(f) = $make(concat!(stringify!($backend), "::update_put_get_delete")) else {
                    return;
                };
                check_update_put_get_delete(&f.store);
            }

            /// Proves Keep and deleting an absent record change nothing on this backend.
            #[test]
            fn keep_and_absent_delete_change_nothing() {
                let Some(f) = $make(concat!(stringify!($backend), "::keep_and_absent_delete_change_nothing")) else {
                    return;
                };
                check_keep_and_absent_delete_change_nothing(&f.store);
            }

            /// Proves the update closure sees the current record on this backend.
            #[test]
            fn update_sees_current_value() {
                let Some(f) = $make(concat!(stringify!($backend), "::update_sees_current_value")) else {
                    return;
                };
                check_update_sees_current_value(&f.store);
            }

            /// Proves concurrent read-modify-writes lose no update on this backend.
            #[test]
            fn concurrent_updates_are_atomic() {
                let Some(f) = $make(concat!(stringify!($backend), "::concurrent_updates_are_atomic")) else {
                    return;
                };
                check_concurrent_updates_are_atomic(&f.store);
            }

            /// Proves 32 concurrent claims of one key have one winner on this backend.
            #[test]
            fn concurrent_claims_have_one_winner() {
                let Some(f) = $make(concat!(stringify!($backend), "::concurrent_claims_have_one_winner")) else {
                    return;
                };
                check_concurrent_claims_have_one_winner(&f.store);
            }

            /// Proves record scans are ordered, cursor-exclusive and bounded on this backend.
            #[test]
            fn scan_pages_in_key_order() {
                let Some(f) = $make(concat!(stringify!($backend), "::scan_pages_in_key_order")) else {
                    return;
                };
                check_scan_pages_in_key_order(&f.store);
            }

            /// Proves record trees and resources are separate on this backend.
            #[test]
            fn trees_are_separate() {
                let Some(f) = $make(concat!(stringify!($backend), "::trees_are_separate")) else {
                    return;
                };
                check_trees_are_separate(&f.store);
            }

            /// Proves damaged records are absent, counted and repairable on this backend.
            #[test]
            fn corrupt_record_absent_and_counted() {
                let Some(f) = $make(concat!(stringify!($backend), "::corrupt_record_absent_and_counted")) else {
                    return;
                };
                check_corrupt_record_absent_and_counted(&f.store);
            }

            /// Proves record payloads round-trip byte for byte on this backend.
            #[test]
            fn payloads_round_trip() {
                let Some(f) = $make(concat!(stringify!($backend), "::payloads_round_trip")) else {
                    return;
                };
                check_payloads_round_trip(&f.store);
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(32))]
                /// Proves this backend matches the reference model on random schedules.
                #[test]
                fn matches_model(ops in proptest::collection::vec(op(), 0..24)) {
                    let Some(f) = $make(concat!(stringify!($backend), "::matches_model")) else {
                        return Ok(());
                    };
                    check_matches_model(&f.store, &ops)?;
                }

                /// Proves this backend's records match the reference model on random
                /// schedules of updates.
                #[test]
                fn records_match_model(ops in proptest::collection::vec(record_op(), 0..32)) {
                    let Some(f) = $make(concat!(stringify!($backend), "::records_match_model")) else {
                        return Ok(());
                    };
                    check_records_match_model(&f.store, &ops)?;
                }
            }
        }
    };
}

store_conformance!(memory_backend, |_| Some(memory()));
store_conformance!(sled_backend, |_| Some(sled()));
store_conformance!(redis_backend, redis);
store_conformance!(redis_cluster_backend, redis_cluster);

// ---- sled only: behaviour of a directory on disk ----

/// Opens `dir` or panics with the error chain.
fn open(dir: &Path) -> SledStore {
    // Reopens follow a drop; sled frees the lock a moment later, from its own threads.
    SledStore::open_within(dir, std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("open {}: {e:?}", dir.display()))
}

/// Proves data written and acknowledged survives closing and reopening the directory.
#[test]
fn sled_reopen_keeps_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        s.put_resource("a", b"1").expect("put");
        s.put_resource("b", b"2").expect("put");
        s.put_resource("a", b"3").expect("replace");
        s.delete_resource("b").expect("delete");
        s.put_resource("c", b"").expect("put");
    }
    let s = open(dir.path());
    let expected = vec![("a".to_owned(), b"3".to_vec()), ("c".to_owned(), vec![])];
    assert_eq!(s.list_resources().expect("list"), expected);
    assert!(s.put_resource("a", b"4").expect("replace after reopen"));
}

/// Set (to a directory) only in the child process of `sled_acked_writes_survive_exit`.
const EXIT_CHILD_DIR: &str = "PERMITD_STORE_TEST_EXIT_CHILD_DIR";
/// Exit code by which the child shows it got past its writes.
const EXIT_CHILD_CODE: i32 = 42;

/// Child half of `sled_acked_writes_survive_exit` (a no-op when run normally): writes,
/// then exits at once. `exit` runs no destructors, like kill -9, so sled's drop-time flush
/// never happens; only what each call flushed before returning can survive.
#[test]
fn sled_exit_child() {
    let Some(dir) = std::env::var_os(EXIT_CHILD_DIR) else {
        return;
    };
    let s = open(Path::new(&dir));
    s.put_resource("a", b"1").expect("put");
    s.put_resource("b", b"2").expect("put");
    s.delete_resource("a").expect("delete");
    std::process::exit(EXIT_CHILD_CODE);
}

/// Proves a put or delete is durable when it returns: a process that exits right after,
/// without dropping the store, loses none of them.
#[test]
fn sled_acked_writes_survive_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .args(["--exact", "store::conformance::sled_exit_child"])
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
    assert_eq!(
        s.list_resources().expect("list"),
        vec![("b".into(), b"2".to_vec())]
    );
}

/// Proves damage on disk is still skipped after a reopen, and the counter restarts.
#[test]
fn sled_corrupt_value_survives_reopen_as_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        s.put_resource("good", b"v").expect("put");
        s.inject_raw(b"bad", b"garbage bytes on disk");
    }
    let s = open(dir.path());
    assert_eq!(s.corrupt_values(), 0);
    assert_eq!(names(&s), ["good"]);
    assert_eq!(s.corrupt_values(), 1);
}

/// Proves opening a path that is a regular file fails with advice naming the path.
#[test]
fn sled_open_on_regular_file_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write file");
    for path in [file.clone(), file.join("below")] {
        let err = SledStore::open(&path).expect_err("must not open a file");
        assert!(
            matches!(&err, StoreError::Open { hint: OpenHint::NotADirectory, path: p, .. } if *p == path),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a directory"), "{msg}");
        assert!(!err.is_transient());
    }
}

/// Proves a second open of a directory in use fails with the lock hint, and succeeds once
/// the first store is dropped.
#[test]
fn sled_second_open_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    first.put_resource("a", b"1").expect("put");
    let err = SledStore::open(dir.path()).expect_err("lock must be held");
    assert!(
        matches!(
            err,
            StoreError::Open {
                hint: OpenHint::Locked,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("another permitd"), "{err}");
    drop(first);
    assert_eq!(names(&open(dir.path())), ["a"]);
}

/// Proves the store can be shared across threads behind an `Arc<dyn ResourceStore>`,
/// the way the server holds it.
#[test]
fn store_is_usable_as_shared_trait_object() {
    let fixture = sled();
    let shared: Arc<dyn ResourceStore> = Arc::new(fixture.store);
    let clone = Arc::clone(&shared);
    std::thread::spawn(move || clone.put_resource("t", b"v").expect("put"))
        .join()
        .expect("join");
    assert_eq!(names(&*shared), ["t"]);
}

// ---- Redis only: one Redis, several clients ----

/// Proves a record and a resource written through one `RedisStore` are read, scanned and
/// updated through a second one on the same server and prefix: two permitd replicas see
/// one store.
#[test]
fn redis_replicas_share_records_and_resources() {
    use super::{RecordStore, Write, keys::RecordTree::Idempotency};
    let Some(server) = shared_redis() else {
        eprintln!("SKIP redis_replicas_share_records_and_resources: redis-server not installed");
        return;
    };
    let prefix = unique_prefix("replicas");
    let open = || RedisStore::open(&server.url(), &prefix, REDIS_TIMEOUT).expect("open");
    let (a, b) = (open(), open());
    assert!(records::set(
        &a,
        Idempotency,
        b"k",
        &Write::Put(b"from a".to_vec())
    ));
    assert_eq!(
        b.get(Idempotency, b"k").expect("get"),
        Some(b"from a".to_vec())
    );
    assert_eq!(
        records::all(&b, Idempotency, 10),
        vec![(b"k".to_vec(), Some(b"from a".to_vec()))]
    );
    // A claim through b sees a's record: it is taken, b keeps it.
    let mut seen = None;
    b.update(Idempotency, b"k", &mut |cur| {
        seen = cur.map(<[u8]>::to_vec);
        Write::Keep
    })
    .expect("update");
    assert_eq!(seen.as_deref(), Some(&b"from a"[..]));
    assert!(records::set(&b, Idempotency, b"k", &Write::Delete));
    assert_eq!(a.get(Idempotency, b"k").expect("get"), None);
    assert!(!a.put_resource("r", b"1").expect("put"));
    assert!(
        b.put_resource("r", b"2")
            .expect("replace through the other")
    );
    assert_eq!(names(&a), ["r"]);
}

/// Proves stores under different prefixes on one server do not see each other.
#[test]
fn redis_prefixes_isolate_deployments() {
    use super::{RecordStore, Write, keys::RecordTree::Cache};
    let Some(server) = shared_redis() else {
        eprintln!("SKIP redis_prefixes_isolate_deployments: redis-server not installed");
        return;
    };
    let open = |p: &str| RedisStore::open(&server.url(), &unique_prefix(p), REDIS_TIMEOUT);
    let (a, b) = (open("a").expect("open"), open("b").expect("open"));
    a.put_resource("r", b"a").expect("put");
    records::set(&a, Cache, b"k", &Write::Put(b"a".to_vec()));
    assert_eq!(b.list_resources().expect("list"), vec![]);
    assert_eq!(b.get(Cache, b"k").expect("get"), None);
    assert_eq!(b.scan(Cache, None, 10).expect("scan"), vec![]);
}

/// Proves a Redis outage surfaces as transient backend errors, and that the same store
/// works again once Redis is back (broken connections are not reused).
#[test]
fn redis_outage_is_transient_and_recovers() {
    use super::{RecordStore, Write, keys::RecordTree::Cache};
    let Some(mut server) = RedisServer::for_test("redis_outage_is_transient_and_recovers") else {
        return;
    };
    let s = RedisStore::open(&server.url(), "pd:", Duration::from_secs(2)).expect("open");
    records::set(&s, Cache, b"k", &Write::Put(b"v".to_vec()));
    server.kill();
    let errors = [
        s.get(Cache, b"k").map(drop),
        s.update(Cache, b"k", &mut |_| Write::Delete).map(drop),
        s.scan(Cache, None, 10).map(drop),
        s.list_resources().map(drop),
        s.put_resource("r", b"v").map(drop),
    ];
    for result in errors {
        let err = result.expect_err("redis is down");
        assert!(
            matches!(
                err,
                StoreError::Backend {
                    transient: true,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    server.restart().expect("restart");
    // Nothing was persisted (no AOF in tests): the key is gone, the store works.
    assert_eq!(s.get(Cache, b"k").expect("get after restart"), None);
    assert!(records::set(&s, Cache, b"k", &Write::Put(b"w".to_vec())));
    assert!(!s.put_resource("r", b"v").expect("put after restart"));
}

/// Proves a scan skips an index member whose record is gone (deleted between the index
/// read and the record read) and tops the page up, so a short page still means the end.
#[test]
fn redis_scan_skips_index_members_without_records() {
    use super::{RecordStore, Write, keys, keys::RecordTree::Cache};
    let Some(server) = shared_redis() else {
        eprintln!(
            "SKIP redis_scan_skips_index_members_without_records: redis-server not installed"
        );
        return;
    };
    let prefix = unique_prefix("orphans");
    let s = RedisStore::open(&server.url(), &prefix, REDIS_TIMEOUT).expect("open");
    for k in [b"a", b"c", b"e"] {
        records::set(&s, Cache, k, &Write::Put(k.to_vec()));
    }
    // Index members with no record, as a concurrent delete leaves them mid-scan.
    let mut raw = ::redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    for orphan in [&b"b"[..], b"b2", b"d"] {
        ::redis::cmd("ZADD")
            .arg(keys::redis_record_index(&prefix, Cache))
            .arg(0)
            .arg(orphan)
            .exec(&mut raw)
            .expect("zadd");
    }
    let keys_of = |page: Vec<super::Scanned>| page.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(keys_of(s.scan(Cache, None, 2).expect("scan")), [b"a", b"c"]);
    assert_eq!(
        keys_of(s.scan(Cache, Some(b"a"), 2).expect("scan")),
        [b"c", b"e"]
    );
    assert_eq!(records::all(&s, Cache, 1).len(), 3);
    assert_eq!(RecordStore::corrupt_values(&s), 0);
}

// ---- Redis Cluster only: keys spread over nodes ----

/// A plain connection to one cluster node (no redirections followed).
fn node_connection(url: &str) -> ::redis::Connection {
    ::redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("node connection")
}

/// The cluster slot of `key`, as node `c` computes it (`CLUSTER KEYSLOT`).
fn key_slot(c: &mut ::redis::Connection, key: &[u8]) -> u16 {
    ::redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(c)
        .expect("cluster keyslot")
}

/// Which of `nodes` serves `key`: the one that answers an `EXISTS` instead of `MOVED`.
fn owner(nodes: &mut [::redis::Connection], key: &[u8]) -> usize {
    let serving: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            ::redis::cmd("EXISTS")
                .arg(key)
                .query::<i64>(&mut nodes[i])
                .is_ok()
        })
        .collect();
    assert_eq!(serving.len(), 1, "exactly one node serves a slot");
    serving[0]
}

/// Proves every key of a record tree (records and index) hashes to one slot, and that
/// the two trees are on different slots, which a cluster may place on different nodes:
/// after moving the cache tree's (empty) slot to another node than the idempotency
/// tree's, a store opened before the move still writes, reads and scans both trees, and
/// each tree's keys live on its own node.
#[test]
fn redis_cluster_tree_on_one_slot_trees_on_different_nodes() {
    use super::{RecordStore, Write, keys, keys::RecordTree};
    // Its own cluster: moving a slot under the shared one would strand other tests' keys.
    let Some(cluster) =
        RedisCluster::for_test("redis_cluster_tree_on_one_slot_trees_on_different_nodes")
    else {
        return;
    };
    let urls = cluster.urls();
    let mut nodes: Vec<::redis::Connection> = urls.iter().map(|u| node_connection(u)).collect();
    let prefix = "pd:";
    let mut tree_slots = Vec::new();
    for tree in RecordTree::ALL {
        let index_slot = key_slot(&mut nodes[0], &keys::redis_record_index(prefix, tree));
        for key in [&b""[..], b"a", b"{x}", b"}{", b"\x07default\xff"] {
            let record = keys::redis_record_key(prefix, tree, key);
            assert_eq!(key_slot(&mut nodes[0], &record), index_slot);
        }
        tree_slots.push(index_slot);
    }
    assert_ne!(
        tree_slots[0], tree_slots[1],
        "the trees have different slots"
    );

    let store = RedisStore::open(&cluster.url_list(), prefix, REDIS_TIMEOUT).expect("open");
    let idem_index = keys::redis_record_index(prefix, RecordTree::Idempotency);
    let cache_index = keys::redis_record_index(prefix, RecordTree::Cache);
    assert!(records::set(
        &store,
        RecordTree::Idempotency,
        b"i",
        &Write::Put(b"claim".to_vec())
    ));

    // Move the cache slot (no keys yet) to a node that does not serve the idempotency
    // tree, the way a reshard ends: IMPORTING / MIGRATING, then NODE on every node.
    let idem_node = owner(&mut nodes, &idem_index);
    let from = owner(&mut nodes, &cache_index);
    let to = (0..nodes.len())
        .find(|&i| i != idem_node && i != from)
        .expect("a third node");
    let ids: Vec<String> = nodes
        .iter_mut()
        .map(|c| ::redis::cmd("CLUSTER").arg("MYID").query(c).expect("myid"))
        .collect();
    let slot = tree_slots[1];
    let setslot = |c: &mut ::redis::Connection, how: &str, id: &str| {
        ::redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(id)
            .exec(c)
            .expect("setslot");
    };
    setslot(&mut nodes[to], "IMPORTING", &ids[from]);
    setslot(&mut nodes[from], "MIGRATING", &ids[to]);
    for c in &mut nodes {
        setslot(c, "NODE", &ids[to]);
    }
    assert_eq!(owner(&mut nodes, &cache_index), to);
    assert_ne!(
        owner(&mut nodes, &cache_index),
        owner(&mut nodes, &idem_index)
    );

    // The store's connection still has the old slot map: it must follow the redirection.
    for k in [&b"b"[..], b"a", b"c"] {
        assert!(records::set(
            &store,
            RecordTree::Cache,
            k,
            &Write::Put(k.to_vec())
        ));
    }
    assert_eq!(
        store.get(RecordTree::Idempotency, b"i").expect("get"),
        Some(b"claim".to_vec())
    );
    let cached = records::all(&store, RecordTree::Cache, 2);
    let cached_keys: Vec<&[u8]> = cached.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(cached_keys, [&b"a"[..], b"b", b"c"]);
    // Each tree's record and index live on their own node.
    for (tree, node) in [
        (RecordTree::Idempotency, idem_node),
        (RecordTree::Cache, to),
    ] {
        let key: &[u8] = if tree == RecordTree::Cache {
            b"a"
        } else {
            b"i"
        };
        for stored in [
            keys::redis_record_key(prefix, tree, key),
            keys::redis_record_index(prefix, tree),
        ] {
            let exists: i64 = ::redis::cmd("EXISTS")
                .arg(&stored)
                .query(&mut nodes[node])
                .expect("exists on its node");
            assert_eq!(exists, 1, "{}", keys::display_key(&stored));
        }
    }
    assert!(records::set(
        &store,
        RecordTree::Idempotency,
        b"i",
        &Write::Delete
    ));
    assert_eq!(store.get(RecordTree::Idempotency, b"i").expect("get"), None);
}
