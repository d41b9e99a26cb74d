//! Idempotency over the real server: one winner among concurrent Begins, byte-for-byte
//! replay, fingerprint mismatch, lock expiry and takeover, refused Completes and Abandons
//! that change nothing, and bad input.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use permitd::proto::{self, IdempotencyState, idempotency_client::IdempotencyClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{TestServer, dur, from_dur, from_ts};

type Client = IdempotencyClient<Channel>;

pub fn begin_req(key: &str, fp: &str) -> proto::BeginRequest {
    proto::BeginRequest {
        key: key.into(),
        fingerprint: fp.into(),
        ..Default::default()
    }
}

/// A result with every part filled: binary body (all byte values), headers, metadata.
pub fn full_result(tag: &str) -> proto::StoredResult {
    proto::StoredResult {
        status_code: 429,
        headers: HashMap::from([
            ("retry-after".into(), "7".into()),
            ("x-tag".into(), tag.into()),
            ("content-type".into(), "application/octet-stream".into()),
        ]),
        body: (0..=255u8).chain(tag.bytes()).collect(),
        metadata: HashMap::from([("attempt".into(), "3".into()), ("tag".into(), tag.into())]),
    }
}

async fn begin(c: &mut Client, r: proto::BeginRequest) -> proto::BeginResponse {
    c.begin(r).await.expect("begin").into_inner()
}

async fn complete(
    c: &mut Client,
    key: &str,
    token: &str,
    r: proto::StoredResult,
) -> Result<(), tonic::Status> {
    c.complete(proto::CompleteRequest {
        key: key.into(),
        result: Some(r),
        lock_token: token.into(),
    })
    .await
    .map(drop)
}

async fn get(c: &mut Client, key: &str) -> Result<proto::GetResponse, tonic::Status> {
    c.get(proto::GetRequest { key: key.into() })
        .await
        .map(tonic::Response::into_inner)
}

/// Sleeps until `at` (a deadline the server announced), bounded to 5 s.
async fn until(at: SystemTime) {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(wait <= Duration::from_secs(5), "deadline {wait:?} away");
    tokio::time::sleep(wait).await;
}

/// 32 concurrent Begins on one key, over 4 connections: exactly one ACQUIRED, the other 31
/// IN_PROGRESS with a retry_after within the lock TTL.
#[tokio::test]
async fn concurrent_begins_acquire_exactly_once() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.idempotency().await);
    }
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let mut c = clients[i % 4].clone();
            tokio::spawn(async move { begin(&mut c, begin_req("race", "fp")).await })
        })
        .collect();
    let mut states = HashMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.state() == IdempotencyState::InProgress {
            let after = from_dur(r.retry_after.as_ref().unwrap());
            assert!(
                after > Duration::ZERO && after <= Duration::from_secs(60),
                "{after:?}"
            );
        }
        *states.entry(r.state()).or_insert(0) += 1;
    }
    assert_eq!(
        states.get(&IdempotencyState::Acquired),
        Some(&1),
        "{states:?}"
    );
    assert_eq!(
        states.get(&IdempotencyState::InProgress),
        Some(&31),
        "{states:?}"
    );
    let stats = clients[0]
        .stats(proto::IdempotencyStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.acquired, stats.in_progress), (1, 31));
    server.stop().await;
}

/// COMPLETED replays the stored result byte for byte (status, headers, body, metadata) to
/// Begin and Get, and a reused key with another fingerprint is FINGERPRINT_MISMATCH with the
/// stored result untouched.
#[tokio::test]
async fn completed_replays_and_mismatch_leaves_result() {
    let server = TestServer::start().await;
    let mut c = server.idempotency().await;
    let r = begin(&mut c, begin_req("pay-1", "fp-a")).await;
    assert_eq!(r.state(), IdempotencyState::Acquired);
    assert_eq!(r.lock_token.len(), 32);
    let lock_end = from_ts(r.lock_expires_at.as_ref().unwrap());
    assert!(
        lock_end > SystemTime::now() + Duration::from_secs(50),
        "default lock 60 s"
    );
    complete(&mut c, "pay-1", &r.lock_token, full_result("a"))
        .await
        .unwrap();
    for _ in 0..2 {
        let replay = begin(&mut c, begin_req("pay-1", "fp-a")).await;
        assert_eq!(replay.state(), IdempotencyState::Completed);
        assert_eq!(replay.result, Some(full_result("a")));
    }
    let mismatch = begin(&mut c, begin_req("pay-1", "fp-b")).await;
    assert_eq!(mismatch.state(), IdempotencyState::FingerprintMismatch);
    assert_eq!(mismatch.result, None);
    let g = get(&mut c, "pay-1").await.unwrap();
    assert_eq!(g.state(), IdempotencyState::Completed);
    assert_eq!(
        (g.result, g.fingerprint.as_str()),
        (Some(full_result("a")), "fp-a")
    );
    let expires = from_ts(g.expires_at.as_ref().unwrap());
    assert!(
        expires > SystemTime::now() + Duration::from_secs(23 * 3600),
        "default ttl 24 h"
    );
    server.stop().await;
}

/// A holder that crashed: its lock (200 ms) expires and another worker acquires; the old
/// holder's late Complete is FAILED_PRECONDITION and the new holder's result is the one kept.
#[tokio::test]
async fn lock_expiry_lets_another_worker_acquire() {
    let server = TestServer::start().await;
    let mut c = server.idempotency().await;
    let short = proto::BeginRequest {
        lock_ttl: Some(dur(Duration::from_millis(200))),
        ..begin_req("job", "fp")
    };
    let a = begin(&mut c, short.clone()).await;
    assert_eq!(a.state(), IdempotencyState::Acquired);
    let b = begin(&mut c, short.clone()).await;
    assert_eq!(b.state(), IdempotencyState::InProgress);
    assert!(from_dur(b.retry_after.as_ref().unwrap()) <= Duration::from_millis(200));
    until(from_ts(a.lock_expires_at.as_ref().unwrap())).await;
    // The lock has ended: the next Begin (retrying at most a few times, as told) acquires.
    let mut b = begin(&mut c, short.clone()).await;
    for _ in 0..20 {
        if b.state() == IdempotencyState::Acquired {
            break;
        }
        tokio::time::sleep(from_dur(b.retry_after.as_ref().unwrap())).await;
        b = begin(&mut c, short.clone()).await;
    }
    assert_eq!(b.state(), IdempotencyState::Acquired);
    assert_ne!(a.lock_token, b.lock_token);
    let e = complete(&mut c, "job", &a.lock_token, full_result("a"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        get(&mut c, "job").await.unwrap().result,
        None,
        "nothing stored"
    );
    complete(&mut c, "job", &b.lock_token, full_result("b"))
        .await
        .unwrap();
    assert_eq!(
        get(&mut c, "job").await.unwrap().result,
        Some(full_result("b"))
    );
    server.stop().await;
}

/// Complete without Begin, a double Complete, and Complete by a holder whose lock expired
/// are FAILED_PRECONDITION with a clear message, and change nothing; Abandon frees a key,
/// and Get/Abandon of an unknown key say so.
#[tokio::test]
async fn refused_completes_change_nothing() {
    let server = TestServer::start().await;
    let mut c = server.idempotency().await;
    let e = complete(&mut c, "never", "not-a-token", full_result("x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("call Begin"), "{}", e.message());
    // Only the holder completes: the lock token is required.
    let e = complete(&mut c, "never", "", full_result("x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("lock_token:"), "{}", e.message());
    assert_eq!(
        get(&mut c, "never").await.unwrap_err().code(),
        Code::NotFound
    );

    let r = begin(&mut c, begin_req("twice", "fp")).await;
    complete(&mut c, "twice", &r.lock_token, full_result("1"))
        .await
        .unwrap();
    let e = complete(&mut c, "twice", &r.lock_token, full_result("2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("already completed"), "{}", e.message());
    assert_eq!(
        get(&mut c, "twice").await.unwrap().result,
        Some(full_result("1"))
    );

    let short = proto::BeginRequest {
        lock_ttl: Some(dur(Duration::from_millis(100))),
        ..begin_req("late", "fp")
    };
    let r = begin(&mut c, short).await;
    until(from_ts(r.lock_expires_at.as_ref().unwrap())).await;
    let e = complete(&mut c, "late", &r.lock_token, full_result("late"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("expired"), "{}", e.message());
    let g = get(&mut c, "late").await.unwrap();
    assert_eq!((g.state(), g.result), (IdempotencyState::InProgress, None));

    // Abandon by the (expired) holder frees the key, even for another request.
    c.abandon(proto::AbandonRequest {
        key: "late".into(),
        lock_token: r.lock_token.clone(),
    })
    .await
    .unwrap();
    let again = begin(&mut c, begin_req("late", "other-fp")).await;
    assert_eq!(again.state(), IdempotencyState::Acquired);
    let e = c
        .abandon(proto::AbandonRequest {
            key: "late".into(),
            lock_token: r.lock_token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "not the holder any more"
    );
    let e = c
        .abandon(proto::AbandonRequest {
            key: "unknown".into(),
            lock_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .abandon(proto::AbandonRequest {
            key: "unknown".into(),
            lock_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    server.stop().await;
}

/// The bytes of a BeginRequest whose key is not UTF-8 (a string field cannot hold that).
#[derive(Clone, PartialEq, prost::Message)]
struct RawBegin {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

/// Bad input: each row gets INVALID_ARGUMENT naming the field, nothing is stored, and the
/// server stays healthy; non-UTF-8 is refused by the transport before permitd sees it.
#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.idempotency().await;
    let pd = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    let rows: Vec<(&str, proto::BeginRequest, &str)> = vec![
        ("empty key", begin_req("", "fp"), "key"),
        ("256-byte key", begin_req(&"k".repeat(256), "fp"), "key"),
        ("control char", begin_req("a\u{7}b", "fp"), "key"),
        (
            "long fingerprint",
            begin_req("k", &"f".repeat(513)),
            "fingerprint",
        ),
        (
            "ttl 0",
            proto::BeginRequest {
                ttl: pd(0, 0),
                ..begin_req("k", "fp")
            },
            "ttl",
        ),
        (
            "ttl negative",
            proto::BeginRequest {
                ttl: pd(-1, 0),
                ..begin_req("k", "fp")
            },
            "ttl",
        ),
        (
            "ttl 31 days",
            proto::BeginRequest {
                ttl: pd(31 * 86_400, 0),
                ..begin_req("k", "fp")
            },
            "ttl",
        ),
        (
            "ttl i64::MAX",
            proto::BeginRequest {
                ttl: pd(i64::MAX, 0),
                ..begin_req("k", "fp")
            },
            "ttl",
        ),
        (
            "lock 0",
            proto::BeginRequest {
                lock_ttl: pd(0, 0),
                ..begin_req("k", "fp")
            },
            "lock_ttl",
        ),
        (
            "lock over ttl",
            proto::BeginRequest {
                ttl: pd(1, 0),
                lock_ttl: pd(2, 0),
                ..begin_req("k", "fp")
            },
            "lock_ttl",
        ),
    ];
    for (name, req, field) in rows {
        let e = c.begin(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(
            e.message().starts_with(&format!("{field}: ")),
            "{name}: {}",
            e.message()
        );
    }
    let ok = begin(&mut c, begin_req("k", "fp")).await;
    assert_eq!(
        ok.state(),
        IdempotencyState::Acquired,
        "nothing was stored by the bad rows"
    );

    let big = proto::StoredResult {
        body: vec![1; 1 << 20],
        ..Default::default()
    };
    let e = complete(&mut c, "k", &ok.lock_token, big)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("result: "), "{}", e.message());
    let e = c
        .complete(proto::CompleteRequest {
            key: "k".into(),
            result: None,
            lock_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "result: is required")
    );
    assert_eq!(
        get(&mut c, "k").await.unwrap().state(),
        IdempotencyState::InProgress
    );

    let mut raw = tonic::client::Grpc::new(server.channel().await);
    raw.ready().await.unwrap();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/permitd.v1.Idempotency/Begin");
    let codec = tonic_prost::ProstCodec::<RawBegin, proto::BeginResponse>::new();
    let res = raw
        .unary(
            tonic::Request::new(RawBegin {
                key: vec![b'k', 0xff],
            }),
            path,
            codec,
        )
        .await;
    assert!(res.is_err(), "non-UTF-8 key accepted");
    assert_eq!(
        begin(&mut c, begin_req("k2", "fp")).await.state(),
        IdempotencyState::Acquired
    );
    server.stop().await;
}
