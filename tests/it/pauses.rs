//! Bounded pauses: no report can stop a resource longer than its `max_retry_after`. A
//! year-long block (0 remaining, reset in 31 000 000 s), an exhausted dimension the resource
//! does not define and a 429 with a year's Retry-After are each cut to it, show in GetQuota
//! and Watch (what, until when, which header, that it was cut), and an admin's
//! ResetResource clears them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use permitd::proto;
use tonic::Code;

use crate::support::{TestServer, acquire_req, dur, from_dur, from_ts, limit, put, resource};

const CAP: Duration = Duration::from_secs(30);

fn capped_resource(name: &str) -> proto::Resource {
    let mut r = resource(
        name,
        vec![limit("requests", 100, Duration::from_secs(60), 0)],
        0,
    );
    r.backoff = Some(proto::BackoffPolicy {
        max_retry_after: Some(dur(CAP)),
        ..Default::default()
    });
    r
}

async fn report(server: &TestServer, resource: &str, status: u32, headers: &[(&str, &str)]) {
    server
        .permits()
        .await
        .report_outcome(proto::ReportOutcomeRequest {
            resource: resource.into(),
            status_code: status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        })
        .await
        .expect("report");
}

async fn quota(server: &TestServer, resource: &str) -> proto::QuotaUpdate {
    server
        .quotas()
        .await
        .get_quota(proto::GetQuotaRequest {
            resource: resource.into(),
            ..Default::default()
        })
        .await
        .expect("quota")
        .into_inner()
}

/// How far `t` is from now.
fn ahead(t: &prost_types::Timestamp) -> Duration {
    from_ts(t)
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

#[tokio::test]
async fn year_long_pauses_are_capped_visible_and_clearable() {
    let server = TestServer::start().await;
    for r in ["p:block", "p:unknown", "p:retry"] {
        put(&server, capped_resource(r)).await;
    }
    // 1. A 200 that says 0 remaining until a reset 359 days away.
    report(
        &server,
        "p:block",
        200,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "31000000"),
        ],
    )
    .await;
    let q = quota(&server, "p:block").await;
    let d = &q.dimensions[0];
    assert_eq!(d.remaining, 0, "{q:?}");
    let until = ahead(d.reset_at.as_ref().unwrap());
    assert!(
        until <= CAP && until > CAP - Duration::from_secs(5),
        "{until:?}"
    );
    assert!(
        d.reason.contains("x-ratelimit-remaining") || d.reason.contains("0 remaining"),
        "{}",
        d.reason
    );
    assert!(
        d.reason.contains("cut to max_retry_after (30s)"),
        "{}",
        d.reason
    );
    let a = server
        .permits()
        .await
        .acquire_permit(acquire_req("p:block"))
        .await
        .unwrap()
        .into_inner();
    assert!(!a.granted);
    let wait = from_dur(a.retry_after.as_ref().unwrap());
    assert!(
        wait <= CAP && wait > CAP - Duration::from_secs(5),
        "retry_after {wait:?}"
    );

    // 2. An exhausted dimension the resource does not define: a pause of the whole bucket,
    // cut too, and explained.
    report(
        &server,
        "p:unknown",
        200,
        &[
            // The resource defines no `tokens` dimension.
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-limit-tokens", "5000"),
            ("x-ratelimit-reset-tokens", "31000000s"),
        ],
    )
    .await;
    let q = quota(&server, "p:unknown").await;
    let until = ahead(q.cooldown_until.as_ref().expect("paused"));
    assert!(until <= CAP, "{until:?}");
    assert!(
        q.cooldown_reason.contains("does not define"),
        "{}",
        q.cooldown_reason
    );
    assert!(
        q.cooldown_reason.contains("cut to max_retry_after"),
        "{}",
        q.cooldown_reason
    );

    // 3. A 429 with a year's Retry-After.
    report(&server, "p:retry", 429, &[("retry-after", "31000000")]).await;
    let q = quota(&server, "p:retry").await;
    let until = ahead(q.cooldown_until.as_ref().expect("paused"));
    assert!(
        until <= CAP && until > CAP - Duration::from_secs(5),
        "{until:?}"
    );
    assert_eq!(
        q.cooldown_reason,
        "upstream answered 429: paused 30s, cut to max_retry_after (30s)"
    );

    // Watch shows the same.
    let mut w = server
        .quotas()
        .await
        .watch(proto::WatchRequest {
            resource_prefix: "p:retry".into(),
            min_interval: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let u = w.message().await.unwrap().unwrap();
    assert!(
        u.cooldown_reason.starts_with("upstream answered 429"),
        "{u:?}"
    );
    drop(w);

    // ResetResource (admin) clears each.
    let mut q = server.quotas().await;
    for r in ["p:block", "p:unknown", "p:retry"] {
        let reset = q
            .reset_resource(proto::ResetResourceRequest { name: r.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reset.buckets, 1, "{r}");
        let after = quota(&server, r).await;
        assert!(
            after.cooldown_until.is_none() && after.cooldown_reason.is_empty(),
            "{after:?}"
        );
        assert_eq!(after.dimensions[0].remaining, 100, "{after:?}");
        let a = server
            .permits()
            .await
            .acquire_permit(acquire_req(r))
            .await
            .unwrap()
            .into_inner();
        assert!(a.granted, "{r} still paused after ResetResource");
    }
    let e = q
        .reset_resource(proto::ResetResourceRequest {
            name: "p:absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    println!(
        "RESULT bounded_pauses capped_to_s={} cleared=3",
        CAP.as_secs()
    );
    server.stop().await;
}

/// Over Redis with `local_fallback`, an error Redis itself answers (here WRONGTYPE: the
/// bucket's key holds a string) is UNAVAILABLE, not a local grant: only a connection
/// failure falls back.
#[tokio::test]
async fn redis_answering_an_error_does_not_fall_back() {
    let Some(redis) =
        permitd_testkit::RedisServer::for_test("redis_answering_an_error_does_not_fall_back")
    else {
        return;
    };
    let server = TestServer::start_tuned(|c| {
        c.redis = Some(permitd::cluster::Settings {
            url: redis.url(),
            policy: permitd::cluster::FailurePolicy::LocalFallback,
            ..permitd::cluster::Settings::default()
        });
    })
    .await;
    put(&server, capped_resource("wt:x")).await;
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client.get_connection().expect("redis");
    let key = "permitd:{r:wt:x}:shared";
    redis::cmd("SET")
        .arg(key)
        .arg("not a hash")
        .query::<()>(&mut conn)
        .expect("set");
    let e = server
        .permits()
        .await
        .acquire_permit(acquire_req("wt:x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("WRONGTYPE") || e.message().to_lowercase().contains("wrong"),
        "{}",
        e.message()
    );
    // Repaired, it grants from Redis again.
    redis::cmd("DEL")
        .arg(key)
        .query::<()>(&mut conn)
        .expect("del");
    let a = server
        .permits()
        .await
        .acquire_permit(acquire_req("wt:x"))
        .await
        .unwrap()
        .into_inner();
    assert!(a.granted);
    server.stop().await;
}

/// Two replicas over one Redis: a definition written to the shared store without its change
/// message (a lost pub/sub message) reaches the other replica by the periodic resync.
/// (Deletions travel by their message only: a Redis restarted empty must not read as "every
/// resource deleted".)
#[tokio::test]
async fn replicas_converge_without_the_change_message() {
    use permitd::store::ResourceStore as _;
    use prost::Message as _;
    let Some(redis) =
        permitd_testkit::RedisServer::for_test("replicas_converge_without_the_change_message")
    else {
        return;
    };
    let settings = permitd::cluster::Settings {
        url: redis.url(),
        resync_every: Duration::from_millis(200),
        ..permitd::cluster::Settings::default()
    };
    let a = TestServer::start_tuned(|c| c.redis = Some(settings.clone())).await;
    let b = TestServer::start_tuned(|c| c.redis = Some(settings.clone())).await;
    put(&a, capped_resource("sync:x")).await;
    let until = |want: Option<u64>| {
        let b = &b;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while amount_of(b).await != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica b never saw {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(Some(100)).await;
    // Behind the replicas' backs: the stored definition changes, no message is sent.
    let store =
        permitd::store::RedisStore::open(&settings.url, &settings.prefix, settings.op_timeout)
            .expect("store");
    let mut changed = capped_resource("sync:x");
    changed.limits[0].amount = 7;
    store
        .put_resource("sync:x", &changed.encode_to_vec())
        .expect("write");
    until(Some(7)).await;
    a.stop().await;
    b.stop().await;
}

/// The requests amount of `sync:x` as `s` has it (`None`: not defined there).
async fn amount_of(s: &TestServer) -> Option<u64> {
    s.quotas()
        .await
        .list_resources(proto::ListResourcesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .resources
        .iter()
        .find(|r| r.name == "sync:x")
        .map(|r| r.limits[0].amount)
}
