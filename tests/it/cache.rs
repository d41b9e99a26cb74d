//! The result cache over the real server: get/put/delete, TTL expiry on the read path,
//! the value cap, LRU eviction under a small budget, the counters, and bad input.

use std::time::{Duration, SystemTime};

use permitd::proto::{self, cache_client::CacheClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{TestServer, dur, from_ts};

type Client = CacheClient<Channel>;

pub async fn put(
    c: &mut Client,
    ns: &str,
    key: &str,
    value: Vec<u8>,
    ttl: Option<Duration>,
) -> Result<SystemTime, tonic::Status> {
    let r = c
        .put(proto::CachePutRequest {
            namespace: ns.into(),
            key: key.into(),
            value,
            ttl: ttl.map(dur),
        })
        .await?
        .into_inner();
    Ok(from_ts(r.expires_at.as_ref().expect("expires_at")))
}

pub async fn get(c: &mut Client, ns: &str, key: &str) -> proto::CacheGetResponse {
    c.get(proto::CacheGetRequest {
        namespace: ns.into(),
        key: key.into(),
    })
    .await
    .expect("get")
    .into_inner()
}

async fn delete(c: &mut Client, ns: &str, key: &str) -> bool {
    c.delete(proto::CacheDeleteRequest {
        namespace: ns.into(),
        key: key.into(),
    })
    .await
    .expect("delete")
    .into_inner()
    .deleted
}

pub async fn stats(c: &mut Client) -> proto::CacheStatsResponse {
    c.stats(proto::CacheStatsRequest {})
        .await
        .expect("stats")
        .into_inner()
}

/// Put, get (value and expiry), delete, and the hit/miss counters over the wire; keys are
/// separate per namespace.
#[tokio::test]
async fn put_get_delete_and_counters() {
    let server = TestServer::start().await;
    let mut c = server.cache().await;
    assert!(!get(&mut c, "ns", "k").await.found);
    let value: Vec<u8> = (0..=255).collect();
    let expires = put(
        &mut c,
        "ns",
        "k",
        value.clone(),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let now = SystemTime::now();
    assert!(expires > now + Duration::from_secs(55) && expires <= now + Duration::from_secs(60));
    let hit = get(&mut c, "ns", "k").await;
    assert!(hit.found);
    assert_eq!(hit.value, value);
    assert_eq!(hit.expires_at.as_ref().map(from_ts), Some(expires));
    assert!(!get(&mut c, "other-ns", "k").await.found);
    assert!(delete(&mut c, "ns", "k").await);
    assert!(!delete(&mut c, "ns", "k").await);
    assert!(!get(&mut c, "ns", "k").await.found);
    let s = stats(&mut c).await;
    assert_eq!(
        (s.hits, s.misses, s.entries, s.bytes, s.evictions),
        (1, 3, 0, 0, 0)
    );
    assert_eq!(s.max_total_bytes, 256 << 20);
    server.stop().await;
}

/// An entry is a miss from its expiry on, before any sweep (sweeper slowed to 1 h), and
/// an absent TTL gets the default (1 h).
#[tokio::test]
async fn ttl_expiry_on_the_read_path() {
    let server =
        TestServer::start_tuned(|c| c.cache.sweep_interval = Duration::from_secs(3600)).await;
    let mut c = server.cache().await;
    let expires = put(
        &mut c,
        "ns",
        "short",
        b"v".to_vec(),
        Some(Duration::from_millis(150)),
    )
    .await
    .unwrap();
    assert!(get(&mut c, "ns", "short").await.found);
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert!(
        !get(&mut c, "ns", "short").await.found,
        "expired entry returned"
    );
    assert_eq!(
        stats(&mut c).await.entries,
        1,
        "not swept yet: the read path hid it"
    );
    let expires = put(&mut c, "ns", "default", b"v".to_vec(), None)
        .await
        .unwrap();
    let ttl = expires.duration_since(SystemTime::now()).unwrap();
    assert!(
        ttl > Duration::from_secs(3590) && ttl <= Duration::from_secs(3600),
        "{ttl:?}"
    );
    server.stop().await;
}

/// The value cap (default 1 MiB): exactly the cap is stored, one byte more is
/// INVALID_ARGUMENT naming `value`, far beyond is refused by the transport; nothing stored,
/// the server stays healthy.
#[tokio::test]
async fn value_cap() {
    let server = TestServer::start().await;
    let mut c = server.cache().await;
    put(&mut c, "ns", "max", vec![7; 1 << 20], None)
        .await
        .unwrap();
    assert_eq!(get(&mut c, "ns", "max").await.value.len(), 1 << 20);
    let e = put(&mut c, "ns", "over", vec![7; (1 << 20) + 1], None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("value: 1048577 bytes"),
        "{}",
        e.message()
    );
    let e = put(&mut c, "ns", "huge", vec![7; 4 << 20], None)
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(!get(&mut c, "ns", "over").await.found);
    assert_eq!(stats(&mut c).await.entries, 1);
    server.stop().await;
}

/// Under a 2 000-byte budget, entries of ~390 bytes (200 of them the index's): the least
/// recently used go first (a read refreshes an entry), evictions are counted, and the total
/// stays within budget.
#[tokio::test]
async fn lru_eviction_under_a_small_budget() {
    let server = TestServer::start_tuned(|c| {
        c.cache.max_total_bytes = 2000;
        c.cache.max_value_bytes = 200;
    })
    .await;
    let mut c = server.cache().await;
    for i in 0..5 {
        put(&mut c, "ns", &format!("k{i}"), vec![1; 180], None)
            .await
            .unwrap();
    }
    assert!(get(&mut c, "ns", "k0").await.found);
    for i in 5..7 {
        put(&mut c, "ns", &format!("k{i}"), vec![1; 180], None)
            .await
            .unwrap();
    }
    let present: Vec<bool> = {
        let mut v = Vec::new();
        for i in 0..7 {
            v.push(get(&mut c, "ns", &format!("k{i}")).await.found);
        }
        v
    };
    assert_eq!(
        present,
        [true, false, false, true, true, true, true],
        "k1, k2 were least recently used"
    );
    let s = stats(&mut c).await;
    assert_eq!((s.evictions, s.entries), (2, 5));
    assert!(s.bytes <= 2000, "{}", s.bytes);
    server.stop().await;
}

/// Bad names and TTLs are INVALID_ARGUMENT naming the field, for every method.
#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut c = server.cache().await;
    let long_ns = "n".repeat(201);
    let long_key = "k".repeat(256);
    let names = [
        ("", "k", "namespace"),
        (&*long_ns, "k", "namespace"),
        ("ns", "", "key"),
        ("ns", &*long_key, "key"),
        ("ns", "a\nb", "key"),
    ];
    for (ns, key, field) in names {
        let e = put(&mut c, ns, key, b"v".to_vec(), None).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message().split(':').next()),
            (Code::InvalidArgument, Some(field))
        );
        let e = c
            .get(proto::CacheGetRequest {
                namespace: ns.into(),
                key: key.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c
            .delete(proto::CacheDeleteRequest {
                namespace: ns.into(),
                key: key.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let ttls = [
        (0, 0),
        (-1, 0),
        (366 * 86_400, 0),
        (i64::MAX, 0),
        (0, 1_000_000_000),
    ];
    for (seconds, nanos) in ttls {
        let e = c
            .put(proto::CachePutRequest {
                namespace: "ns".into(),
                key: "k".into(),
                value: b"v".to_vec(),
                ttl: Some(prost_types::Duration { seconds, nanos }),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{seconds}s {nanos}ns");
        assert!(e.message().starts_with("ttl: "), "{}", e.message());
    }
    assert_eq!(stats(&mut c).await.entries, 0);
    put(&mut c, "ns", "k", b"v".to_vec(), None).await.unwrap();
    server.stop().await;
}
