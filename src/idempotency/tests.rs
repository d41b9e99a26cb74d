//! Tests of [`Idempotency`] over a real store (memory; sled where the disk matters): the
//! machine's rules through the store's atomic update, validation, durability waits and
//! the sweeper.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::{MemoryStore, SledStore};

const T: &str = keys::DEFAULT_TENANT;

fn service(store: Arc<dyn RecordStore>) -> (Idempotency, GroupCommit) {
    let commit = GroupCommit::start(Arc::clone(&store)).unwrap();
    let settings = Settings {
        sweep_batch: 2,
        ..Settings::default()
    };
    (Idempotency::new(store, commit.clone(), settings), commit)
}

fn memory() -> (Idempotency, GroupCommit) {
    service(Arc::new(MemoryStore::new()))
}

fn req(fp: &str) -> BeginRequest {
    BeginRequest {
        fingerprint: fp.into(),
        ..BeginRequest::default()
    }
}

fn result(body: &[u8]) -> StoredResult {
    StoredResult {
        status_code: 502,
        headers: [("retry-after".into(), "3".into())].into(),
        body: body.to_vec(),
        metadata: [("attempt".into(), "2".into())].into(),
    }
}

fn token(out: &BeginOutcome) -> String {
    match out {
        BeginOutcome::Acquired { lock_token, .. } => lock_token.clone(),
        other => panic!("expected ACQUIRED, got {other:?}"),
    }
}

/// Proves the full happy path: acquire, in progress for others, complete (durable: one
/// flush waited for), then every Begin replays the result, stored errors included.
#[tokio::test]
async fn begin_complete_replay() {
    let (idem, commit) = memory();
    let out = idem.begin(T, "k", req("fp"), 1_000).await.unwrap();
    let tok = token(&out);
    assert!(matches!(
        idem.begin(T, "k", req("fp"), 1_001).await.unwrap(),
        BeginOutcome::InProgress { .. }
    ));
    let flushes = commit.flushes();
    idem.complete(T, "k", Some(tok), result(b"err"), 1_002)
        .await
        .unwrap();
    assert_eq!(commit.flushes(), flushes + 1, "complete waited for a flush");
    let replay = idem.begin(T, "k", req("fp"), 1_003).await.unwrap();
    assert_eq!(
        replay,
        BeginOutcome::Completed {
            result: result(b"err")
        }
    );
    let view = idem.get(T, "k", 1_004).await.unwrap();
    assert_eq!(view.result, Some(result(b"err")));
    assert_eq!(view.lock_expires_at_ms, None);
    let s = idem.stats();
    assert_eq!(
        (s.acquired, s.in_progress, s.completed, s.replayed),
        (1, 1, 1, 1)
    );
    commit.close();
}

/// Proves 32 concurrent Begins on one key yield exactly one ACQUIRED, on sled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_begins_acquire_once_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let (idem, commit) = service(Arc::new(SledStore::open(dir.path()).unwrap()));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let idem = idem.clone();
            tokio::spawn(async move { idem.begin(T, "k", req("fp"), 5).await.unwrap() })
        })
        .collect();
    let mut acquired = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), BeginOutcome::Acquired { .. }) {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1);
    commit.close();
}

/// Proves a refused call changes nothing: a mismatch, a double complete, a wrong holder
/// leave the stored record byte for byte as it was.
#[tokio::test]
async fn refusals_change_nothing() {
    let store = Arc::new(MemoryStore::new());
    let (idem, commit) = service(store.clone());
    let tok = token(&idem.begin(T, "k", req("fp"), 0).await.unwrap());
    idem.complete(T, "k", Some(tok.clone()), result(b"r"), 1)
        .await
        .unwrap();
    let skey = keys::idempotency_key(T, "k").unwrap();
    let before = store.get(RecordTree::Idempotency, &skey).unwrap();
    assert_eq!(
        idem.begin(T, "k", req("other"), 2).await.unwrap(),
        BeginOutcome::FingerprintMismatch
    );
    let e = idem
        .complete(T, "k", Some(tok), result(b"x"), 3)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IdempotencyError::Refused {
                refusal: Refusal::AlreadyCompleted,
                ..
            }
        ),
        "{e}"
    );
    let e = idem.abandon(T, "k", None, 4).await.unwrap_err();
    assert!(
        matches!(
            e,
            IdempotencyError::Refused {
                refusal: Refusal::AlreadyCompleted,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(store.get(RecordTree::Idempotency, &skey).unwrap(), before);
    commit.close();
}

/// Proves Complete without Begin, and by a holder whose lock expired, are refused.
#[tokio::test]
async fn complete_without_lock_is_refused() {
    let (idem, commit) = memory();
    let e = idem
        .complete(T, "none", None, result(b"r"), 0)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        IdempotencyError::Refused {
            refusal: Refusal::NotBegun,
            ..
        }
    ));
    let r = BeginRequest {
        lock_ttl: Some(Duration::from_millis(10)),
        ..req("fp")
    };
    let a = token(&idem.begin(T, "k", r.clone(), 0).await.unwrap());
    let e = idem
        .complete(T, "k", Some(a.clone()), result(b"r"), 10)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        IdempotencyError::Refused {
            refusal: Refusal::LockExpired,
            ..
        }
    ));
    let b = token(&idem.begin(T, "k", r, 11).await.unwrap());
    assert_ne!(a, b);
    let e = idem
        .complete(T, "k", Some(a), result(b"r"), 12)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        IdempotencyError::Refused {
            refusal: Refusal::NotHolder,
            ..
        }
    ));
    idem.complete(T, "k", Some(b), result(b"r"), 12)
        .await
        .unwrap();
    commit.close();
}

/// Proves Abandon frees the key for the next Begin, even with another fingerprint.
#[tokio::test]
async fn abandon_frees_the_key() {
    let (idem, commit) = memory();
    let tok = token(&idem.begin(T, "k", req("fp"), 0).await.unwrap());
    idem.abandon(T, "k", Some(tok), 1).await.unwrap();
    assert!(matches!(
        idem.get(T, "k", 2).await,
        Err(IdempotencyError::NotFound { .. })
    ));
    assert!(matches!(
        idem.begin(T, "k", req("other"), 3).await.unwrap(),
        BeginOutcome::Acquired { .. }
    ));
    commit.close();
}

/// Proves bad keys, fingerprints, TTLs and oversized results are refused naming the field.
#[tokio::test]
async fn bad_input_names_the_field() {
    let (idem, commit) = memory();
    let field = |e: IdempotencyError| match e {
        IdempotencyError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    for key in [String::new(), "k".repeat(256), "a\nb".into()] {
        let e = idem.begin(T, &key, req("fp"), 0).await.unwrap_err();
        assert_eq!(field(e), "key");
    }
    assert!(idem.begin(T, &"k".repeat(255), req("fp"), 0).await.is_ok());
    let e = idem
        .begin(T, "k", req(&"f".repeat(513)), 0)
        .await
        .unwrap_err();
    assert_eq!(field(e), "fingerprint");
    let bad = [
        (Some(Duration::ZERO), None, "ttl"),
        (Some(MAX_TTL + Duration::from_secs(1)), None, "ttl"),
        (None, Some(Duration::ZERO), "lock_ttl"),
        (
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(2)),
            "lock_ttl",
        ),
    ];
    for (ttl, lock_ttl, want) in bad {
        let r = BeginRequest {
            ttl,
            lock_ttl,
            ..req("fp")
        };
        assert_eq!(field(idem.begin(T, "x", r, 0).await.unwrap_err()), want);
    }
    let tok = token(&idem.begin(T, "big", req("fp"), 0).await.unwrap());
    let huge = result(&vec![0; 1 << 20]);
    let e = idem
        .complete(T, "big", Some(tok), huge, 1)
        .await
        .unwrap_err();
    assert_eq!(field(e), "result");
    commit.close();
}

/// Proves an expired record reads as absent at once (before any sweep), and a sweep
/// removes expired and damaged records in bounded batches while keeping live ones.
#[tokio::test]
async fn expiry_and_sweep() {
    let store = Arc::new(MemoryStore::new());
    let (idem, commit) = service(store.clone());
    let short = BeginRequest {
        ttl: Some(Duration::from_millis(100)),
        ..req("fp")
    };
    for k in ["a", "b", "c", "d"] {
        idem.begin(T, k, short.clone(), 0).await.unwrap();
    }
    idem.begin(T, "live", req("fp"), 0).await.unwrap();
    store.insert_raw_record(RecordTree::Idempotency, b"\x07defaultbad", b"junk");
    assert!(matches!(
        idem.get(T, "a", 100).await,
        Err(IdempotencyError::NotFound { .. })
    ));
    // Batches of 2 over 6 keys (a b bad c d live): three full batches, then an empty one
    // that ends the pass.
    let mut removed = 0;
    let mut batches = 0;
    loop {
        let r = idem.sweep_batch(100).unwrap();
        assert!(r.examined <= 2);
        removed += r.removed;
        batches += 1;
        if r.done {
            break;
        }
    }
    // The damaged record stays: its key fails closed.
    assert_eq!((removed, batches), (4, 4));
    assert_eq!(idem.stats().expired_removed, 4);
    let left = store.scan(RecordTree::Idempotency, None, 10).unwrap();
    assert_eq!(left.len(), 2);
    assert!(idem.get(T, "live", 100).await.is_ok());
    commit.close();
}

/// Proves a record whose payload passes the checksum but does not decode fails closed:
/// counted, every call on its key DATA_LOSS (never ACQUIRED: the side effect must not run
/// twice), and a record whose frame fails its checksum the same.
#[tokio::test]
async fn undecodable_record_is_absent_and_counted() {
    let store = Arc::new(MemoryStore::new());
    let (idem, commit) = service(store.clone());
    let skey = keys::idempotency_key(T, "k").unwrap();
    store
        .update(RecordTree::Idempotency, &skey, &mut |_| {
            Write::Put(vec![0xff; 3])
        })
        .unwrap();
    assert!(matches!(
        idem.get(T, "k", 0).await,
        Err(IdempotencyError::Damaged { .. })
    ));
    assert!(matches!(
        idem.begin(T, "k", req("fp"), 0).await,
        Err(IdempotencyError::Damaged { .. })
    ));
    assert!(idem.stats().corrupt_values >= 1);
    // A frame that fails its checksum: the store reads it as absent, the record fails
    // closed all the same.
    let bad = keys::idempotency_key(T, "framed").unwrap();
    store.insert_raw_record(RecordTree::Idempotency, &bad, b"junk");
    assert!(matches!(
        idem.begin(T, "framed", req("fp"), 0).await,
        Err(IdempotencyError::Damaged { .. })
    ));
    assert!(matches!(
        idem.begin(T, "fresh", req("fp"), 0).await.unwrap(),
        BeginOutcome::Acquired { .. }
    ));
    commit.close();
}
