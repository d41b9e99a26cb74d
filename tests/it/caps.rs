//! Floods against the caps of `[limits]`: past each cap the server answers
//! RESOURCE_EXHAUSTED naming it, its memory stays flat, and what already exists keeps
//! working. Partitions per resource, resources per tenant (made from the template on first
//! use), Watch streams per tenant.

use std::time::Duration;

use permitd::config::Config;
use permitd::proto;
use tonic::Code;

use crate::support::{TestServer, acquire_req, limit, put, resource};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const PARTITION_CAP: usize = 5_000;
const ATTEMPTS: usize = 100_000;
const BATCH: usize = 500;

#[tokio::test]
async fn partition_flood_is_capped() {
    let server = TestServer::start_tuned(|c: &mut Config| {
        c.caps.partitions_per_resource = PARTITION_CAP;
    })
    .await;
    let mut r = resource(
        "flood:p",
        vec![limit("requests", 1_000_000, Duration::from_secs(60), 0)],
        0,
    );
    r.per_partition = true;
    put(&server, r).await;
    put(
        &server,
        resource(
            "flood:other",
            vec![limit("requests", 100, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    let (mut granted, mut refused, mut before) = (0usize, 0usize, 0u64);
    for start in (0..ATTEMPTS).step_by(BATCH) {
        if start == PARTITION_CAP {
            before = rss_kib();
        }
        let requests = (start..start + BATCH)
            .map(|i| proto::AcquirePermitRequest {
                partition: format!("user:{i}"),
                ..acquire_req("flood:p")
            })
            .collect();
        let r = c
            .acquire_permits(proto::AcquirePermitsRequest { requests })
            .await
            .expect("batch")
            .into_inner();
        for item in r.results {
            match item.result {
                Some(proto::acquire_permit_result::Result::Response(p)) if p.granted => {
                    granted += 1;
                }
                Some(proto::acquire_permit_result::Result::Error(e)) => {
                    assert_eq!(e.code, Code::ResourceExhausted as i32, "{e:?}");
                    assert!(
                        e.message.contains("max_partitions_per_resource"),
                        "{}",
                        e.message
                    );
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let grown = rss_kib().saturating_sub(before);
    println!(
        "RESULT caps partitions attempted={ATTEMPTS} cap={PARTITION_CAP} granted={granted} refused={refused} rss_growth_kib={grown}"
    );
    assert_eq!(granted, PARTITION_CAP);
    assert_eq!(refused, ATTEMPTS - PARTITION_CAP);
    // 95 000 refused partitions leave nothing behind (a live partition costs ~0.3 KiB, so
    // 95 000 kept would be ~30 MiB).
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB past the cap");
    // Existing partitions and other resources still grant.
    for req in [
        proto::AcquirePermitRequest {
            partition: "user:7".into(),
            ..acquire_req("flood:p")
        },
        acquire_req("flood:other"),
    ] {
        assert!(c.acquire_permit(req).await.unwrap().into_inner().granted);
    }
    server.stop().await;
}

#[tokio::test]
async fn template_resource_flood_is_capped() {
    let server = TestServer::start_tuned(|c: &mut Config| {
        c.caps.resources_per_tenant = 300;
        let mut t = resource(
            "",
            vec![limit("requests", 10, Duration::from_secs(60), 0)],
            0,
        );
        t.name = String::new();
        c.default_resource = Some(t);
    })
    .await;
    put(
        &server,
        resource(
            "kept:x",
            vec![limit("requests", 10, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    let mut c = server.permits().await;
    let mut refused = 0;
    for i in 0..2_000 {
        match c.acquire_permit(acquire_req(&format!("new:{i}"))).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                assert!(
                    e.message().contains("max_resources_per_tenant"),
                    "{}",
                    e.message()
                );
                refused += 1;
            }
        }
    }
    println!("RESULT caps resources attempted=2000 cap=300 refused={refused}");
    // kept:x is one of the 300.
    assert_eq!(refused, 2_000 - 299);
    assert!(
        c.acquire_permit(acquire_req("kept:x"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let e = server
        .quotas()
        .await
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource(
                "one:more",
                vec![limit("requests", 1, Duration::from_secs(1), 0)],
                0,
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    server.stop().await;
}

#[tokio::test]
async fn watch_streams_are_capped_and_freed() {
    let server = TestServer::start_tuned(|c: &mut Config| {
        c.caps.watch_streams_per_tenant = 20;
    })
    .await;
    put(
        &server,
        resource(
            "w:x",
            vec![limit("requests", 10, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    let req = || proto::WatchRequest {
        resource_prefix: "w:".into(),
        min_interval: None,
    };
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        match server.quotas().await.watch(req()).await {
            Ok(s) => open.push(s.into_inner()),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                assert!(
                    e.message().contains("max_watch_streams_per_tenant"),
                    "{}",
                    e.message()
                );
                refused += 1;
            }
        }
    }
    println!(
        "RESULT caps watch attempted=200 cap=20 open={} refused={refused}",
        open.len()
    );
    assert_eq!((open.len(), refused), (20, 180));
    // Streams that end give their slots back.
    open.clear();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if server.quotas().await.watch(req()).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "closed streams never freed their slots"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// At most `max_connections` connections are served at once: one more waits in the listen
/// backlog (its call times out) until a served one closes, then it is served.
#[tokio::test]
async fn connections_are_capped() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = TestServer::start_tuned(|c: &mut Config| c.caps.max_connections = 3).await;
    let connect = || async {
        tonic::transport::Channel::from_shared(server.url())
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_millis(300))
            .connect_lazy()
    };
    let check = |ch: tonic::transport::Channel| async move {
        HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await
            .is_ok()
    };
    // Three connections served (the readiness probe's may take a moment to close).
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.len() < 3 {
        let ch = connect().await;
        if check(ch.clone()).await {
            held.push(ch);
        } else {
            assert!(
                std::time::Instant::now() < deadline,
                "could not hold 3 connections"
            );
        }
    }
    let fourth = connect().await;
    assert!(
        !check(fourth.clone()).await,
        "a fourth connection was served past the cap"
    );
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check(fourth.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "a freed slot was never given to the waiting connection"
        );
    }
    for ch in held {
        assert!(check(ch).await, "the held connections keep being served");
    }
    println!("RESULT caps connections cap=3 fourth_waited=true served_after_release=true");
    server.stop().await;
}
