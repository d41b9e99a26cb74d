//! `Permits.AcquirePermits` over the real server: every item answered on its own (grants,
//! denials and errors side by side, fields named with the item's index), the batch cap, a
//! queued item that does not hold the others up, the gRPC deadline bounding every item,
//! and limits still exact when many batches race (the token-bucket envelope of `load`).
//!
//! Grant instants are read from the server (`lease_expires_at - lease`); the ordering test
//! waits on the queue depth seen through GetQuota, not on sleeps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use permitd::proto::{self, acquire_permit_result::Result as Item};
use tonic::Code;

use crate::load::{envelope, utilisation};
use crate::support::{
    TestServer, acquire_req, dur, from_dur, from_ts, limit, put, resource, wait_queue_depth,
};

const LEASE: Duration = Duration::from_secs(60);

fn item(name: &str) -> proto::AcquirePermitRequest {
    let mut r = acquire_req(name);
    r.lease = Some(dur(LEASE));
    r
}

fn batch(requests: Vec<proto::AcquirePermitRequest>) -> proto::AcquirePermitsRequest {
    proto::AcquirePermitsRequest { requests }
}

fn answer(r: &proto::AcquirePermitResult) -> &proto::AcquirePermitResponse {
    match &r.result {
        Some(Item::Response(a)) => a,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn error(r: &proto::AcquirePermitResult) -> &proto::PermitItemError {
    match &r.result {
        Some(Item::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn granted_at(r: &proto::AcquirePermitResponse) -> SystemTime {
    assert!(r.granted, "not granted: {r:?}");
    from_ts(r.lease_expires_at.as_ref().expect("lease_expires_at")) - LEASE
}

/// One batch mixing grants, a denial and three kinds of error: each item gets its own
/// answer, in order, and the errors do not stop the items after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_answered_on_its_own() {
    let server = TestServer::start().await;
    put(
        &server,
        resource(
            "batch:mix",
            vec![limit("requests", 3, Duration::from_secs(3600), 3)],
            0,
        ),
    )
    .await;
    let mut undeclared = item("batch:mix");
    undeclared.cost = [("tokens".to_owned(), 5)].into();
    let mut too_long = item("batch:mix");
    too_long.max_wait = Some(dur(Duration::from_secs(7200)));
    let requests = vec![
        item("batch:mix"),
        item("batch:mix"),
        undeclared,
        item("batch:nope"),
        item("batch:mix"),
        item("batch:mix"),
        too_long,
        item(""),
    ];
    let r = server
        .permits()
        .await
        .acquire_permits(batch(requests))
        .await
        .expect("the call succeeds even when items fail")
        .into_inner();
    assert_eq!(r.results.len(), 8);
    let ids: Vec<&str> = [0, 1, 4]
        .iter()
        .map(|&i| {
            let a = answer(&r.results[i]);
            assert!(a.granted, "item {i}: {a:?}");
            a.permit_id.as_str()
        })
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "distinct permits");
    // Items are tried in order: the three grants are in batch order.
    let at: Vec<SystemTime> = [0, 1, 4]
        .iter()
        .map(|&i| granted_at(answer(&r.results[i])))
        .collect();
    assert!(at[0] <= at[1] && at[1] <= at[2]);
    assert_eq!(answer(&r.results[4]).remaining.get("requests"), Some(&0));
    let denied = answer(&r.results[5]);
    assert!(!denied.granted);
    assert_eq!(
        denied.denial_reason,
        proto::DenialReason::RateLimited as i32
    );
    assert!(from_dur(denied.retry_after.as_ref().unwrap()) > Duration::ZERO);
    let e = error(&r.results[2]);
    assert_eq!(e.code, Code::InvalidArgument as i32);
    assert!(
        e.message.starts_with("requests[2].cost.tokens: "),
        "{}",
        e.message
    );
    let e = error(&r.results[3]);
    assert_eq!(e.code, Code::NotFound as i32);
    assert!(e.message.contains("batch:nope"), "{}", e.message);
    let e = error(&r.results[6]);
    assert_eq!(e.code, Code::InvalidArgument as i32);
    assert!(
        e.message.starts_with("requests[6].max_wait: "),
        "{}",
        e.message
    );
    let e = error(&r.results[7]);
    assert_eq!(e.code, Code::InvalidArgument as i32);
    assert!(
        e.message.starts_with("requests[7].resource: "),
        "{}",
        e.message
    );
    // The batch took exactly what its grants took: the bucket is empty, nothing more.
    let one = server
        .permits()
        .await
        .acquire_permit(item("batch:mix"))
        .await
        .unwrap()
        .into_inner();
    assert!(!one.granted);
    // An empty batch is an empty answer.
    let empty = server
        .permits()
        .await
        .acquire_permits(batch(Vec::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.results.is_empty());
    server.stop().await;
}

/// 1 000 items are answered; 1 001 are refused as a whole, naming `requests`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_capped_at_1000() {
    let server = TestServer::start().await;
    put(
        &server,
        resource(
            "batch:cap",
            vec![limit("requests", 1_000_000, Duration::from_secs(1), 0)],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    let r = c
        .acquire_permits(batch(vec![item("batch:cap"); 1000]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 1000);
    assert!(r.results.iter().all(|x| answer(x).granted));
    let e = c
        .acquire_permits(batch(vec![item("batch:cap"); 1001]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("requests: 1001 items, at most 1000"),
        "{}",
        e.message()
    );
    server.stop().await;
}

/// A queued item does not hold up the items after it: item 0 waits for a concurrency slot
/// that the test frees only once it sees item 0 in the queue, yet item 1 (another
/// resource, no wait) is granted before item 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_item_does_not_block_the_others() {
    let server = TestServer::start().await;
    put(&server, resource("batch:slot", vec![], 1)).await;
    put(
        &server,
        resource(
            "batch:free",
            vec![limit("requests", 1000, Duration::from_secs(1), 0)],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    let held = c
        .acquire_permit(item("batch:slot"))
        .await
        .unwrap()
        .into_inner();
    assert!(held.granted);
    let mut queued = item("batch:slot");
    queued.max_wait = Some(dur(Duration::from_secs(20)));
    let call = {
        let mut c = c.clone();
        tokio::spawn(async move {
            c.acquire_permits(batch(vec![queued, item("batch:free")]))
                .await
                .unwrap()
                .into_inner()
        })
    };
    wait_queue_depth(&server, "batch:slot", "", 1).await;
    c.release_permit(proto::ReleasePermitRequest {
        permit_id: held.permit_id,
        refund: false,
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the batch is answered once its queued item is")
        .unwrap();
    let (waited, free) = (answer(&r.results[0]), answer(&r.results[1]));
    assert!(
        granted_at(free) < granted_at(waited),
        "the immediate item was granted while the queued one waited"
    );
    assert!(from_dur(free.waited.as_ref().unwrap()) < from_dur(waited.waited.as_ref().unwrap()));
    server.stop().await;
}

/// The call's gRPC deadline bounds every item's wait: an item asking to wait 10 s in a
/// 300 ms call is answered QUEUE_TIMEOUT before the deadline, and the call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_bounds_every_item() {
    let server = TestServer::start().await;
    put(&server, resource("batch:deadline", vec![], 1)).await;
    let mut c = server.permits().await;
    let held = c
        .acquire_permit(item("batch:deadline"))
        .await
        .unwrap()
        .into_inner();
    assert!(held.granted);
    let mut long = item("batch:deadline");
    long.max_wait = Some(dur(Duration::from_secs(10)));
    let mut req = tonic::Request::new(batch(vec![long.clone(), long]));
    req.set_timeout(Duration::from_millis(300));
    let t = Instant::now();
    let r = c.acquire_permits(req).await.expect("answered in time");
    assert!(t.elapsed() < Duration::from_secs(2));
    for x in &r.get_ref().results {
        let a = answer(x);
        assert!(!a.granted);
        assert_eq!(a.denial_reason, proto::DenialReason::QueueTimeout as i32);
    }
    server.stop().await;
}

/// 16 clients send batches of 10 (half queued, half immediate) against one limit of 20
/// per 100 ms for 30 periods: no grant falls outside the token-bucket envelope and the
/// limit is used (utilisation >= 0.95).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_exact_under_concurrent_batches() {
    const CLIENTS: usize = 16;
    const CONNECTIONS: usize = 4;
    let server = TestServer::start().await;
    let (amount, period, burst) = (20, Duration::from_millis(100), 20);
    put(
        &server,
        resource(
            "batch:env",
            vec![limit("requests", amount, period, burst)],
            0,
        ),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(server.permits().await);
    }
    let grants = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + period * 30;
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let mut c = clients[w % CONNECTIONS].clone();
        let grants = grants.clone();
        tasks.push(tokio::spawn(async move {
            let (mut calls, mut denied) = (0u64, 0u64);
            while Instant::now() < end {
                let left = end.saturating_duration_since(Instant::now());
                let requests = (0..10)
                    .map(|i| {
                        let mut r = item("batch:env");
                        r.client_id = format!("batch-{w}-{i}");
                        if i % 2 == 0 {
                            r.max_wait = Some(dur(left.min(Duration::from_millis(500))));
                        }
                        r
                    })
                    .collect();
                let r = c
                    .acquire_permits(batch(requests))
                    .await
                    .unwrap()
                    .into_inner();
                calls += 1;
                assert_eq!(r.results.len(), 10);
                let mut soonest = None::<Duration>;
                let mut got = 0;
                for x in &r.results {
                    let a = answer(x);
                    if a.granted {
                        got += 1;
                        let at = granted_at(a)
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap();
                        grants.lock().unwrap().push(at.as_nanos());
                    } else {
                        denied += 1;
                        let wait = from_dur(a.retry_after.as_ref().unwrap());
                        assert!(!wait.is_zero(), "a denial carries a retry_after");
                        soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                    }
                }
                // A well-behaved caller comes back when told to when it got nothing.
                if got == 0
                    && let Some(wait) = soonest
                {
                    tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now())))
                        .await;
                }
            }
            (calls, denied)
        }));
    }
    let (mut calls, mut denied) = (0, 0);
    for t in tasks {
        let (c, d) = t.await.unwrap();
        calls += c;
        denied += d;
    }
    let elapsed = start.elapsed();
    let mut grants = Arc::try_unwrap(grants).unwrap().into_inner().unwrap();
    grants.sort_unstable();
    let (violations, worst) = envelope(&grants, amount, period, burst);
    let util = utilisation(grants.len(), amount, period, burst, elapsed);
    println!(
        "RESULT batch_no_over_grant limit={amount}/{}ms burst={burst} clients={CLIENTS} batch=10 calls={calls} grants={} denials={denied} windows_over_limit={violations} worst_window={worst} bound={} utilisation={util:.3}",
        period.as_millis(),
        grants.len(),
        burst + amount,
    );
    assert_eq!(violations, 0, "grants outside the envelope");
    assert!(util >= 0.95, "utilisation {util}");
    server.stop().await;
}
