//! Queueing over the real server: priority order and FIFO, wake-up latency (on a release and
//! at a rate limit's exact ready time), `QUEUE_TIMEOUT` at `max_wait` and at the gRPC
//! deadline, cancelled callers, `QUEUE_FULL`, and strict head-of-line (no starvation of a
//! large cost).
//!
//! Every step waits on an event: a response, or the queue depth seen through GetQuota
//! (`wait_queue_depth`). Grant instants are read from the server itself
//! (`lease_expires_at - lease`, exact to the nanosecond on the server's monotonic clock).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use permitd::proto::{self, permits_client::PermitsClient};
use tonic::transport::Channel;

use crate::support::{
    TestServer, acquire_req, dur, from_dur, from_ts, limit, put, quota, resource, wait_queue_depth,
};

/// Lease asked for by every request here, so grant instants can be derived from
/// `lease_expires_at`.
const LEASE: Duration = Duration::from_secs(60);

fn req(name: &str, cost: u64, max_wait: Duration, priority: i32) -> proto::AcquirePermitRequest {
    let mut r = acquire_req(name);
    r.cost = [("requests".to_owned(), cost)].into();
    r.max_wait = (!max_wait.is_zero()).then(|| dur(max_wait));
    r.priority = priority;
    r.lease = Some(dur(LEASE));
    r
}

async fn acquire(
    c: &mut PermitsClient<Channel>,
    r: proto::AcquirePermitRequest,
) -> proto::AcquirePermitResponse {
    c.acquire_permit(r).await.expect("acquire").into_inner()
}

async fn release(c: &mut PermitsClient<Channel>, permit_id: String) {
    c.release_permit(proto::ReleasePermitRequest {
        permit_id,
        refund: false,
    })
    .await
    .expect("release");
}

/// The server's instant of a grant (requests here all ask for `LEASE`).
fn granted_at(r: &proto::AcquirePermitResponse) -> SystemTime {
    assert!(r.granted, "not granted: {r:?}");
    from_ts(r.lease_expires_at.as_ref().expect("lease_expires_at")) - LEASE
}

fn reason(r: &proto::AcquirePermitResponse) -> proto::DenialReason {
    proto::DenialReason::try_from(r.denial_reason).expect("known denial reason")
}

/// A resource with only a concurrency limit of 1, and a permit holding its slot.
async fn held_slot(server: &TestServer, name: &str, max_queue: u32) -> String {
    let mut r = resource(name, vec![], 1);
    r.max_queue = max_queue;
    put(server, r).await;
    let h = acquire(&mut server.permits().await, req(name, 1, Duration::ZERO, 0)).await;
    assert!(h.granted);
    h.permit_id
}

/// Waiters are served by priority, higher first, and FIFO within one priority: with the
/// slot held, waiters of priorities [0, 5, 0, 5, 1] are granted 5a, 5b, 1, 0a, 0b.
#[tokio::test]
async fn queue_priority_then_fifo() {
    let server = TestServer::start().await;
    let holder = held_slot(&server, "q:prio", 0).await;
    let client = server.permits().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let waiters = [("0a", 0), ("5a", 5), ("0b", 0), ("5b", 5), ("1", 1)];
    for (i, (label, priority)) in waiters.into_iter().enumerate() {
        let (mut c, order) = (client.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let r = acquire(&mut c, req("q:prio", 1, Duration::from_secs(10), priority)).await;
            assert!(r.granted, "{label}: {r:?}");
            // Only one slot: the next grant cannot happen before this release, so the
            // order of the pushes is the order of the grants.
            order.lock().unwrap().push(label);
            release(&mut c, r.permit_id).await;
        }));
        // Arrival order is the FIFO order under test: enqueue one at a time.
        wait_queue_depth(&server, "q:prio", "", u32::try_from(i + 1).unwrap()).await;
    }
    release(&mut client.clone(), holder).await;
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["5a", "5b", "1", "0a", "0b"]);
    let q = quota(&server, "q:prio").await;
    assert_eq!((q.in_flight, q.queue_depth), (0, 0));
    server.stop().await;
}

/// A queued waiter is granted as soon as capacity returns: within a few ms of the release
/// of a concurrency slot, and at a rate limit's exact ready instant (timer, not polling).
#[tokio::test]
async fn queue_wakeup_latency() {
    let server = TestServer::start().await;
    // Concurrency: the gap from sending the release to receiving the waiter's grant.
    let holder = held_slot(&server, "q:wake", 0).await;
    let mut c = server.permits().await;
    let mut wc = c.clone();
    let waiter = tokio::spawn(async move {
        let r = acquire(&mut wc, req("q:wake", 1, Duration::from_secs(10), 0)).await;
        (r, Instant::now())
    });
    wait_queue_depth(&server, "q:wake", "", 1).await;
    let released = Instant::now();
    release(&mut c, holder).await;
    let (r, got) = waiter.await.unwrap();
    assert!(r.granted);
    let release_gap = got - released;
    // Rate: 1 per 200 ms, drained by the first call; the waiter's grant is due exactly
    // 200 ms after the first grant.
    put(
        &server,
        resource(
            "q:rate",
            vec![limit("requests", 1, Duration::from_millis(200), 1)],
            0,
        ),
    )
    .await;
    let first = acquire(&mut c, req("q:rate", 1, Duration::ZERO, 0)).await;
    let first_recv = Instant::now();
    let ready = granted_at(&first) + Duration::from_millis(200);
    let sent = Instant::now();
    let r = acquire(&mut c, req("q:rate", 1, Duration::from_secs(2), 0)).await;
    let elapsed = sent.elapsed();
    let at = granted_at(&r);
    let waited = from_dur(r.waited.as_ref().unwrap());
    // Signed lateness of the grant against the exact ready instant, in microseconds.
    let rate_gap_us = match at.duration_since(ready) {
        Ok(late) => i128::try_from(late.as_micros()).unwrap(),
        Err(early) => -i128::try_from(early.duration().as_micros()).unwrap(),
    };
    println!(
        "RESULT queue_wakeup release_gap_us={} rate_gap_us={rate_gap_us} waited_ms={}",
        release_gap.as_micros(),
        waited.as_millis()
    );
    assert!(
        release_gap < Duration::from_millis(30),
        "release -> grant took {release_gap:?}"
    );
    assert!(
        (-1_000..=30_000).contains(&rate_gap_us),
        "grant {rate_gap_us} us from the exact ready instant"
    );
    // `waited` agrees with the client's view: at most the call's duration, and about the
    // time left until the ready instant when the call was sent (client-side upper bound of
    // it; the slack is the two one-way latencies).
    let ready_client = (first_recv + Duration::from_millis(200)).saturating_duration_since(sent);
    assert!(waited <= elapsed, "waited {waited:?} > call {elapsed:?}");
    assert!(
        waited + Duration::from_millis(10) >= ready_client
            && waited <= ready_client + Duration::from_millis(30),
        "waited {waited:?}, ready in {ready_client:?}"
    );
    server.stop().await;
}

/// A waiter that cannot be served within `max_wait` is answered QUEUE_TIMEOUT at
/// `max_wait`, not earlier and not much later, with the same retry_after advice as an
/// immediate denial (the end of the holder's lease), and leaves the queue.
#[tokio::test]
async fn queue_timeout_at_max_wait() {
    let server = TestServer::start().await;
    let _holder = held_slot(&server, "q:timeout", 0).await;
    let mut c = server.permits().await;
    let t = Instant::now();
    let now = acquire(&mut c, req("q:timeout", 1, Duration::ZERO, 0)).await;
    assert_eq!(reason(&now), proto::DenialReason::ConcurrencyLimited);
    let now_retry = from_dur(now.retry_after.as_ref().unwrap());
    let sent = Instant::now();
    let r = acquire(&mut c, req("q:timeout", 1, Duration::from_millis(100), 0)).await;
    let elapsed = sent.elapsed();
    assert!(!r.granted);
    assert_eq!(reason(&r), proto::DenialReason::QueueTimeout);
    // Both denials point at the same instant, the end of the holder's lease (60 s): the
    // time-out says so too, not a bare minimum.
    let retry = from_dur(r.retry_after.as_ref().unwrap());
    assert!(
        retry <= now_retry && retry + t.elapsed() >= now_retry,
        "QUEUE_TIMEOUT retry_after {retry:?}, immediate denial {now_retry:?}"
    );
    let waited = from_dur(r.waited.as_ref().unwrap());
    assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(160),
        "answered after {elapsed:?}"
    );
    assert_eq!(quota(&server, "q:timeout").await.queue_depth, 0);
    server.stop().await;
}

/// The call's gRPC deadline caps `max_wait`: with max_wait 10 s and a 150 ms request
/// timeout, the caller gets an OK QUEUE_TIMEOUT answer before its own deadline fires
/// (not DEADLINE_EXCEEDED), and is out of the queue.
// Two threads: on one, a stall of the thread past the 5 ms margin expires the client's and
// the server's timers in the same turn, and the client may poll its own first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_at_grpc_deadline() {
    let server = TestServer::start().await;
    let _holder = held_slot(&server, "q:deadline", 0).await;
    let mut c = server.permits().await;
    // Connect first: the client's deadline clock also runs during a connection handshake,
    // which the server cannot see.
    let r = acquire(&mut c, req("q:deadline", 1, Duration::ZERO, 0)).await;
    assert_eq!(reason(&r), proto::DenialReason::ConcurrencyLimited);
    let mut request = tonic::Request::new(req("q:deadline", 1, Duration::from_secs(10), 0));
    request.set_timeout(Duration::from_millis(150));
    let t = Instant::now();
    let r = c.acquire_permit(request).await;
    let elapsed = t.elapsed();
    let r = match r {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("expected an answer before the deadline, got {s:?} after {elapsed:?}"),
    };
    assert!(!r.granted);
    assert_eq!(reason(&r), proto::DenialReason::QueueTimeout);
    assert!(from_dur(r.retry_after.as_ref().unwrap()) > Duration::ZERO);
    // The server answered at its own deadline (150 ms less a margin), not at max_wait; the
    // OK status above shows the answer beat the client's deadline.
    let waited = from_dur(r.waited.as_ref().unwrap());
    assert!(
        waited >= Duration::from_millis(125) && waited < Duration::from_millis(150),
        "server answered after {waited:?} (client: {elapsed:?})"
    );
    assert!(elapsed >= waited, "client {elapsed:?} < server {waited:?}");
    assert_eq!(quota(&server, "q:deadline").await.queue_depth, 0);
    server.stop().await;
}

/// A waiter whose call is aborted (its future dropped: the stream is reset on a connection
/// that stays open) leaves the queue and takes nothing: once the holder releases, a fresh
/// immediate acquire gets the only slot.
#[tokio::test]
async fn queue_cancelled_waiter_leaves_and_takes_nothing() {
    let server = TestServer::start().await;
    let holder = held_slot(&server, "q:cancel", 0).await;
    let mut c = server.permits().await;
    let mut wc = c.clone();
    let waiter = tokio::spawn(async move {
        acquire(&mut wc, req("q:cancel", 1, Duration::from_secs(10), 0)).await
    });
    wait_queue_depth(&server, "q:cancel", "", 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    wait_queue_depth(&server, "q:cancel", "", 0).await;
    release(&mut c, holder).await;
    let q = quota(&server, "q:cancel").await;
    assert_eq!(
        (q.in_flight, q.queue_depth),
        (0, 0),
        "the slot went nowhere"
    );
    let r = acquire(&mut c, req("q:cancel", 1, Duration::ZERO, 0)).await;
    assert!(
        r.granted,
        "the cancelled waiter must not hold the slot: {r:?}"
    );
    assert_eq!(quota(&server, "q:cancel").await.in_flight, 1);
    server.stop().await;
}

/// With `max_queue` 2 and two waiters queued, a third caller with a `max_wait` is denied
/// QUEUE_FULL at once (with a retry_after), and the queue is unchanged.
#[tokio::test]
async fn queue_full_past_max_queue() {
    let server = TestServer::start().await;
    let _holder = held_slot(&server, "q:full", 2).await;
    let c = server.permits().await;
    let mut tasks = Vec::new();
    for depth in 1..=2 {
        let mut wc = c.clone();
        tasks.push(tokio::spawn(async move {
            acquire(&mut wc, req("q:full", 1, Duration::from_secs(10), 0)).await
        }));
        wait_queue_depth(&server, "q:full", "", depth).await;
    }
    let t = Instant::now();
    let r = acquire(&mut c.clone(), req("q:full", 1, Duration::from_secs(5), 0)).await;
    let elapsed = t.elapsed();
    assert!(!r.granted);
    assert_eq!(reason(&r), proto::DenialReason::QueueFull);
    assert!(from_dur(r.retry_after.as_ref().unwrap()) > Duration::ZERO);
    assert!(
        elapsed < Duration::from_millis(100),
        "not at once: {elapsed:?}"
    );
    assert_eq!(quota(&server, "q:full").await.queue_depth, 2);
    for t in tasks {
        t.abort();
    }
    server.stop().await;
}

/// Strict head-of-line: 10 per second, drained; a queued waiter for cost 5 is not starved
/// by a stream of immediate cost-1 calls of equal priority. They are denied RATE_LIMITED
/// while it waits (even once single units are free), and it is granted at exactly 500 ms.
#[tokio::test]
async fn queue_large_cost_not_starved() {
    let server = TestServer::start().await;
    let ten = limit("requests", 10, Duration::from_secs(1), 10);
    put(&server, resource("q:starve", vec![ten], 0)).await;
    let mut c = server.permits().await;
    let drain = acquire(&mut c, req("q:starve", 10, Duration::ZERO, 0)).await;
    let drained = granted_at(&drain);
    let drained_client = Instant::now();
    let mut wc = c.clone();
    let big = tokio::spawn(async move {
        acquire(&mut wc, req("q:starve", 5, Duration::from_secs(3), 0)).await
    });
    wait_queue_depth(&server, "q:starve", "", 1).await;
    // Probe every 10 ms until the big waiter is answered (the pace of the probes is the
    // load under test, not a wait for an event).
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut probes, mut late_probes) = (0u32, 0u32);
    while !big.is_finished() {
        tick.tick().await;
        let sent = Instant::now();
        let r = acquire(&mut c, req("q:starve", 1, Duration::ZERO, 0)).await;
        if big.is_finished() {
            break; // the big one may have been granted meanwhile: the race is not the point
        }
        assert!(
            !r.granted,
            "a cost-1 call overtook the queued cost-5: {r:?}"
        );
        assert_eq!(reason(&r), proto::DenialReason::RateLimited);
        probes += 1;
        // From 100 ms on a single unit is free: these probes would fit without the queue.
        if sent >= drained_client + Duration::from_millis(150) {
            late_probes += 1;
        }
    }
    let r = big.await.unwrap();
    let after = granted_at(&r).duration_since(drained).unwrap();
    assert!(
        after >= Duration::from_millis(500) && after <= Duration::from_millis(530),
        "cost 5 granted {after:?} after the drain"
    );
    assert_eq!(r.remaining.get("requests"), Some(&0));
    assert!(
        late_probes >= 5,
        "{probes} probes, {late_probes} with a unit free"
    );
    server.stop().await;
}

/// An immediate denial's retry_after counts the cost queued ahead: with a cost-5 waiter
/// queued on a drained 10/s limit, a cost-1 caller is told about 600 ms after the drain
/// instead of about 100 ms with an empty queue.
#[tokio::test]
async fn queue_retry_after_counts_queued_cost() {
    let server = TestServer::start().await;
    let ten = limit("requests", 10, Duration::from_secs(1), 10);
    put(&server, resource("q:retry", vec![ten], 0)).await;
    let mut c = server.permits().await;
    assert!(
        acquire(&mut c, req("q:retry", 10, Duration::ZERO, 0))
            .await
            .granted
    );
    let t1 = Instant::now();
    let empty = acquire(&mut c, req("q:retry", 1, Duration::ZERO, 0)).await;
    assert_eq!(reason(&empty), proto::DenialReason::RateLimited);
    let empty_wait = from_dur(empty.retry_after.as_ref().unwrap());
    assert!(
        empty_wait > Duration::ZERO && empty_wait <= Duration::from_millis(100),
        "{empty_wait:?}"
    );
    let mut wc = c.clone();
    let big = tokio::spawn(async move {
        acquire(&mut wc, req("q:retry", 5, Duration::from_secs(3), 0)).await
    });
    wait_queue_depth(&server, "q:retry", "", 1).await;
    let queued = acquire(&mut c, req("q:retry", 1, Duration::ZERO, 0)).await;
    let between = t1.elapsed();
    assert_eq!(reason(&queued), proto::DenialReason::RateLimited);
    let queued_wait = from_dur(queued.retry_after.as_ref().unwrap());
    // Both point at fixed instants 500 ms apart (drain + 100 ms, drain + 600 ms); the
    // second was asked `between` later at most.
    assert!(
        queued_wait <= empty_wait + Duration::from_millis(500)
            && queued_wait + between >= empty_wait + Duration::from_millis(500),
        "empty queue {empty_wait:?}, cost 5 queued {queued_wait:?}, {between:?} apart"
    );
    big.abort();
    server.stop().await;
}
