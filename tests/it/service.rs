//! What every permitd serves besides its own API, and how it stops: grpc.health.v1,
//! server reflection (v1 and v1alpha), and graceful shutdown with a waiter queued.

use std::time::{Duration, Instant};

use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

use crate::support::{TestServer, acquire_req, dur, limit, put, resource, wait_queue_depth};

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// Health/Check answers SERVING for the whole server ("") and for each permitd service,
/// and NOT_FOUND for a service it does not know.
#[tokio::test]
async fn health_is_serving() {
    let server = TestServer::start().await;
    let mut h = HealthClient::new(server.channel().await);
    for service in [
        "",
        "permitd.v1.Permits",
        "permitd.v1.Quotas",
        "permitd.v1.Idempotency",
        "permitd.v1.Cache",
    ] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, SERVING, "{service:?}");
    }
    let e = h
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.stop().await;
}

/// Reflection v1 lists every service grpcurl needs and resolves permitd's symbols to file
/// descriptors; v1alpha (older tools) answers the same list.
#[tokio::test]
async fn reflection_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let want = [
        "permitd.v1.Permits",
        "permitd.v1.Quotas",
        "permitd.v1.Idempotency",
        "permitd.v1.Cache",
        "grpc.health.v1.Health",
        "envoy.service.ratelimit.v3.RateLimitService",
    ];

    let mut c = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let reqs = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "permitd.v1.Permits".into(),
                ),
            ),
        },
    ];
    let mut answers = c
        .server_reflection_info(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let listed = match answers.next().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => l,
        other => panic!("expected a service list, got {other:?}"),
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    for w in want {
        assert!(names.contains(&w), "v1 lists {names:?}, missing {w}");
    }
    match answers.next().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty());
        }
        other => panic!("expected file descriptors, got {other:?}"),
    }
    assert!(answers.next().await.is_none(), "one answer per request");

    let mut c =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = c
        .server_reflection_info(tokio_stream::once(req))
        .await
        .unwrap()
        .into_inner();
    let listed = match answers.next().await.unwrap().unwrap().message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => l,
        other => panic!("expected a service list, got {other:?}"),
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    for w in want {
        assert!(names.contains(&w), "v1alpha lists {names:?}, missing {w}");
    }
    server.stop().await;
}

/// Graceful shutdown with a waiter queued (concurrency 1, slot held, waiter max_wait 30 s):
/// health turns NOT_SERVING as soon as shutdown starts, the waiter is answered at once
/// with UNAVAILABLE (or a transport error if its connection closes first), and the server
/// task joins well within the grace period.
#[tokio::test]
async fn graceful_shutdown_answers_waiters() {
    let mut server = TestServer::start().await;
    put(
        &server,
        resource(
            "svc:one",
            vec![limit("requests", 1000, Duration::from_secs(60), 0)],
            1,
        ),
    )
    .await;
    let mut holder = server.permits().await;
    let held = holder
        .acquire_permit(acquire_req("svc:one"))
        .await
        .unwrap()
        .into_inner();
    assert!(held.granted);
    let mut waiter = server.permits().await;
    let queued = tokio::spawn(async move {
        let mut req = acquire_req("svc:one");
        req.max_wait = Some(dur(Duration::from_secs(30)));
        let r = waiter.acquire_permit(req).await;
        (r, Instant::now())
    });
    wait_queue_depth(&server, "svc:one", "", 1).await;

    // Watch health on an established stream: the change is pushed, no polling.
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "permitd.v1.Permits".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status, SERVING);

    let t = Instant::now();
    let join = server.signal_stop().expect("server task");
    let status = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("health change pushed within 5 s")
        .expect("watch stream open")
        .expect("watch item")
        .status;
    assert_eq!(status, NOT_SERVING);
    // Let the stream go, or it would hold the connection open through the drain.
    drop(watch);

    let (res, answered_at) = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the waiter is answered well before its 30 s max_wait")
        .unwrap();
    let waiter_after = answered_at - t;
    let code = match res {
        Ok(r) => panic!(
            "the waiter must not be granted or denied: {:?}",
            r.into_inner()
        ),
        Err(e) => e.code(),
    };
    // UNAVAILABLE from the registry; a closed connection shows as UNKNOWN/UNAVAILABLE too.
    assert!(
        matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled),
        "{code:?}"
    );
    let joined = tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .expect("server task joins within 5 s (grace is 10 s)")
        .expect("join");
    joined.expect("server result");
    let drain = t.elapsed();
    println!(
        "RESULT shutdown waiter_code={code:?} waiter_answered_ms={} drain_ms={}",
        waiter_after.as_millis(),
        drain.as_millis()
    );
    assert!(drain < Duration::from_secs(5), "{drain:?}");
}
