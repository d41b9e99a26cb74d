//! Leases over the real server: a worker that dies holding a concurrency permit gives its
//! slot back when the lease ends; an expired or already released permit is NOT_FOUND on
//! release and changes nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use permitd::proto::{self, permits_client::PermitsClient};
use tonic::transport::Channel;

use crate::support::{
    TestServer, acquire_req, dur, from_dur, from_ts, limit, put, quota, resource,
};

fn remaining(q: &proto::QuotaUpdate) -> u64 {
    q.dimensions
        .iter()
        .find(|d| d.dimension == "requests")
        .expect("requests dimension")
        .remaining
}

async fn acquire_with_lease(
    c: &mut PermitsClient<Channel>,
    name: &str,
    lease: Duration,
) -> proto::AcquirePermitResponse {
    let mut r = acquire_req(name);
    r.lease = Some(dur(lease));
    let r = c.acquire_permit(r).await.expect("acquire").into_inner();
    assert!(r.granted, "{r:?}");
    r
}

async fn release(
    c: &mut PermitsClient<Channel>,
    permit_id: &str,
    refund: bool,
) -> Result<(), tonic::Status> {
    c.release_permit(proto::ReleasePermitRequest {
        permit_id: permit_id.into(),
        refund,
    })
    .await
    .map(|_| ())
}

/// The value of a string field in the CLI's one-line JSON answer.
fn json_field<'a>(json: &'a str, field: &str) -> &'a str {
    let key = format!("\"{field}\":\"");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{field} in {json}"))
        + key.len();
    let len = json[start..].find('"').expect("closing quote");
    &json[start..start + len]
}

/// A worker that dies holding a concurrency permit (the real CLI: `permitd acquire --lease
/// 300ms`, which exits without releasing) blocks the slot only until its lease ends: a
/// queued waiter gets the slot 300 ms after the dead worker's grant (within lease + 1 s).
#[tokio::test]
async fn lease_dead_worker_slot_comes_back() {
    const LEASE: Duration = Duration::from_millis(300);
    let server = TestServer::start().await;
    put(&server, resource("lease:dead", vec![], 1)).await;
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_permitd"))
            .args(["acquire", "lease:dead", "--server", &url])
            .args(["--lease", "300ms", "--json"])
            .output()
            .expect("run permitd acquire")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI prints the lease end to the millisecond (truncated): its grant instant is at
    // or just before this.
    let dead_expires = humantime::parse_rfc3339(json_field(&stdout, "lease_expires_at"))
        .expect("lease_expires_at is RFC 3339");
    let dead_granted = dead_expires - LEASE;

    let mut c = server.permits().await;
    let mut waiter = acquire_req("lease:dead");
    waiter.max_wait = Some(dur(Duration::from_secs(3)));
    waiter.lease = Some(dur(Duration::from_secs(60)));
    let r = c
        .acquire_permit(waiter)
        .await
        .expect("acquire")
        .into_inner();
    assert!(r.granted, "the dead worker's slot never came back: {r:?}");
    let granted = from_ts(r.lease_expires_at.as_ref().unwrap()) - Duration::from_secs(60);
    let reclaimed_after = granted.duration_since(dead_granted).unwrap();
    println!(
        "RESULT lease_reclaim lease_ms={} reclaimed_after_ms={} waited_ms={}",
        LEASE.as_millis(),
        reclaimed_after.as_millis(),
        from_dur(r.waited.as_ref().unwrap()).as_millis()
    );
    assert!(
        reclaimed_after >= LEASE && reclaimed_after <= LEASE + Duration::from_secs(1),
        "slot back {reclaimed_after:?} after the dead worker's grant"
    );
    server.stop().await;
}

/// Once a lease has ended, GetQuota no longer counts it in flight and releasing (or
/// reporting) its permit is NOT_FOUND and gives nothing back, whichever is asked first and
/// without waiting for the periodic sweeper.
#[tokio::test]
async fn lease_expired_permit_is_not_found() {
    const LEASE: Duration = Duration::from_millis(200);
    let server = TestServer::start().await;
    let hour = limit("requests", 10, Duration::from_secs(3600), 0);
    put(&server, resource("lease:q", vec![hour.clone()], 2)).await;
    put(&server, resource("lease:r", vec![hour], 2)).await;
    let mut c = server.permits().await;
    let q = acquire_with_lease(&mut c, "lease:q", LEASE).await;
    let r = acquire_with_lease(&mut c, "lease:r", LEASE).await;
    let expired_by = Instant::now() + LEASE;
    assert_eq!(quota(&server, "lease:q").await.in_flight, 1);
    // Holding the permits until their leases run out is the behaviour under test.
    tokio::time::sleep_until(expired_by.into()).await;

    // GetQuota first, then release.
    let v = quota(&server, "lease:q").await;
    assert_eq!(v.in_flight, 0, "an expired lease is not in flight");
    assert_eq!(remaining(&v), 9);
    let e = release(&mut c, &q.permit_id, true).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert_eq!(remaining(&quota(&server, "lease:q").await), 9, "no refund");

    // Release first, then GetQuota. ReportOutcome on the expired permit has nothing to
    // release either, but it still answers: what the upstream said must reach everyone.
    let e = release(&mut c, &r.permit_id, true).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    c.report_outcome(proto::ReportOutcomeRequest {
        permit_id: r.permit_id.clone(),
        status_code: 200,
        actual_cost: [("requests".to_owned(), 0u64)].into(),
        ..Default::default()
    })
    .await
    .expect("a report on an expired permit is still taken");
    let v = quota(&server, "lease:r").await;
    assert_eq!((v.in_flight, remaining(&v)), (0, 9));
    server.stop().await;
}

/// Releasing a permit twice: the second release is NOT_FOUND and changes neither
/// in_flight (another permit is still held) nor remaining (a second refund is not given).
#[tokio::test]
async fn lease_double_release_is_not_found_and_harmless() {
    let server = TestServer::start().await;
    let hour = limit("requests", 10, Duration::from_secs(3600), 0);
    put(&server, resource("lease:double", vec![hour], 5)).await;
    let mut c = server.permits().await;
    let lease = Duration::from_secs(60);
    let a = acquire_with_lease(&mut c, "lease:double", lease).await;
    let _b = acquire_with_lease(&mut c, "lease:double", lease).await;
    let v = quota(&server, "lease:double").await;
    assert_eq!((v.in_flight, remaining(&v)), (2, 8));
    release(&mut c, &a.permit_id, true)
        .await
        .expect("first release");
    let v = quota(&server, "lease:double").await;
    assert_eq!((v.in_flight, remaining(&v)), (1, 9), "refunded once");
    let e = release(&mut c, &a.permit_id, true).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let v = quota(&server, "lease:double").await;
    assert_eq!(
        (v.in_flight, remaining(&v)),
        (1, 9),
        "second release changed state"
    );
    server.stop().await;
}
