//! Exact sequential semantics over the real server.

use std::time::{Duration, Instant};

use permitd::proto;

use crate::support::{TestServer, acquire_req, from_dur, limit, put, resource};

/// L = 20 per 2 s: calls 1..20 granted with `remaining` 19..0, then denied RATE_LIMITED
/// with a `retry_after` of one emission interval (100 ms) that ends when capacity returns.
#[tokio::test]
async fn twenty_then_denied_until_retry_after() {
    let server = TestServer::start().await;
    put(
        &server,
        resource(
            "seq:20",
            vec![limit("requests", 20, Duration::from_secs(2), 0)],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    for i in 0..20u64 {
        let r = c
            .acquire_permit(acquire_req("seq:20"))
            .await
            .unwrap()
            .into_inner();
        assert!(r.granted, "call {}", i + 1);
        assert!(!r.permit_id.is_empty());
        assert_eq!(r.remaining.get("requests"), Some(&(19 - i)));
        assert!(r.lease_expires_at.is_some());
    }
    let t_denied = Instant::now();
    let r = c
        .acquire_permit(acquire_req("seq:20"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.granted);
    assert_eq!(r.denial_reason, proto::DenialReason::RateLimited as i32);
    assert_eq!(r.remaining.get("requests"), Some(&0));
    let wait = from_dur(r.retry_after.as_ref().unwrap());
    // One token every 100 ms; some of it already elapsed during the 20 calls.
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    // The advice is what is under test here: come back exactly when told.
    tokio::time::sleep_until((t_denied + wait).into()).await;
    let r = c
        .acquire_permit(acquire_req("seq:20"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.granted, "capacity must be back after retry_after");
    assert_eq!(r.remaining.get("requests"), Some(&0));
    server.stop().await;
}

/// A multi-dimension cost is granted only when every dimension has room, atomically, and
/// `remaining` reports each dimension.
#[tokio::test]
async fn multi_dimension_cost_is_atomic() {
    let server = TestServer::start().await;
    put(
        &server,
        resource(
            "seq:tokens",
            vec![
                limit("requests", 10, Duration::from_secs(60), 0),
                limit("tokens", 1000, Duration::from_secs(60), 0),
            ],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    let mut req = acquire_req("seq:tokens");
    req.cost = [("tokens".to_owned(), 700u64)].into();
    let r = c.acquire_permit(req.clone()).await.unwrap().into_inner();
    assert!(r.granted);
    assert_eq!(r.remaining.get("requests"), Some(&9));
    assert_eq!(r.remaining.get("tokens"), Some(&300));
    // Tokens are short: denied, and requests must not have been taken.
    let r = c.acquire_permit(req).await.unwrap().into_inner();
    assert!(!r.granted);
    assert_eq!(r.remaining.get("requests"), Some(&9));
    assert_eq!(r.remaining.get("tokens"), Some(&300));
    server.stop().await;
}

/// Release with refund gives the cost back; ReportOutcome with actual_cost refunds the
/// difference (and charges an excess).
#[tokio::test]
async fn refund_and_reconcile() {
    let server = TestServer::start().await;
    put(
        &server,
        resource(
            "seq:rec",
            vec![limit("tokens", 1000, Duration::from_secs(3600), 0)],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    let mut req = acquire_req("seq:rec");
    req.cost = [("tokens".to_owned(), 600u64)].into();
    let r = c.acquire_permit(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.remaining.get("tokens"), Some(&400));
    c.release_permit(proto::ReleasePermitRequest {
        permit_id: r.permit_id,
        refund: true,
    })
    .await
    .unwrap();
    let r = c.acquire_permit(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        r.remaining.get("tokens"),
        Some(&400),
        "refund restored the 600"
    );
    c.report_outcome(proto::ReportOutcomeRequest {
        permit_id: r.permit_id,
        status_code: 200,
        actual_cost: [("tokens".to_owned(), 250u64)].into(),
        attempt: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let q = server
        .quotas()
        .await
        .get_quota(proto::GetQuotaRequest {
            resource: "seq:rec".into(),
            partition: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let tokens = q
        .dimensions
        .iter()
        .find(|d| d.dimension == "tokens")
        .unwrap();
    assert_eq!(tokens.remaining, 750, "350 of the 600 refunded");
    // An excess is charged: 600 acquired, 900 used.
    let r = c.acquire_permit(req).await.unwrap().into_inner();
    assert_eq!(r.remaining.get("tokens"), Some(&150));
    c.report_outcome(proto::ReportOutcomeRequest {
        permit_id: r.permit_id,
        status_code: 200,
        actual_cost: [("tokens".to_owned(), 900u64)].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut small = acquire_req("seq:rec");
    small.cost = [("tokens".to_owned(), 1u64)].into();
    let r = c.acquire_permit(small).await.unwrap().into_inner();
    assert!(!r.granted, "the bucket is in debt after the excess");
    server.stop().await;
}

/// Per-partition resources give each partition its own bucket, while a resource-scoped
/// limit caps them all together.
#[tokio::test]
async fn partitions_and_a_shared_cap() {
    let server = TestServer::start().await;
    let mut total = limit("requests", 5, Duration::from_secs(60), 0);
    total.scope = proto::LimitScope::Resource as i32;
    let mut r = resource(
        "seq:part",
        vec![limit("requests", 2, Duration::from_secs(60), 0), total],
        0,
    );
    r.per_partition = true;
    put(&server, r).await;
    let mut c = server.permits().await;
    let mut granted = std::collections::BTreeMap::new();
    for user in ["u1", "u2", "u3"] {
        for _ in 0..3 {
            let mut req = acquire_req("seq:part");
            req.partition = user.into();
            let r = c.acquire_permit(req).await.unwrap().into_inner();
            *granted.entry(user).or_insert(0) += u32::from(r.granted);
        }
    }
    // 2 per user, 5 in total: u1 2, u2 2, u3 1.
    assert_eq!(granted.values().copied().collect::<Vec<_>>(), [2, 2, 1]);
    server.stop().await;
}
