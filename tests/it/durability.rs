//! Idempotency records and cache entries across restarts: a restart keeps them (completed,
//! in progress, cached), and expired ones are gone from disk after a sweep.

use std::time::{Duration, SystemTime};

use permitd::config::Config;
use permitd::proto::{self, IdempotencyState};
use permitd::store::keys::RecordTree;
use permitd::store::{RecordStore, SledStore};

use crate::cache::{get as cache_get, put as cache_put, stats as cache_stats};
use crate::idempotency::{begin_req, full_result};
use crate::support::{TestServer, dur, from_dur, from_ts};

/// A restart on the same directory keeps completed records (replayed byte for byte),
/// in-progress locks (still IN_PROGRESS for others), and cache entries with their expiry.
#[tokio::test]
async fn restart_keeps_records_and_cache_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (done_token, cache_expiry) = {
        let server = TestServer::start_in(dir.path()).await;
        let mut idem = server.idempotency().await;
        let r = idem
            .begin(begin_req("done", "fp"))
            .await
            .unwrap()
            .into_inner();
        idem.complete(proto::CompleteRequest {
            key: "done".into(),
            result: Some(full_result("kept")),
            lock_token: r.lock_token.clone(),
        })
        .await
        .unwrap();
        let held = idem
            .begin(begin_req("held", "fp"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(held.state(), IdempotencyState::Acquired);
        let mut cache = server.cache().await;
        let expiry = cache_put(
            &mut cache,
            "ns",
            "k",
            b"cached".to_vec(),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
        server.stop().await;
        (r.lock_token, expiry)
    };
    let server = TestServer::start_in(dir.path()).await;
    let mut idem = server.idempotency().await;
    let replay = idem
        .begin(begin_req("done", "fp"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.state(), IdempotencyState::Completed);
    assert_eq!(replay.result, Some(full_result("kept")));
    let held = idem
        .begin(begin_req("held", "fp"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        held.state(),
        IdempotencyState::InProgress,
        "the lock survived the restart"
    );
    let e = idem
        .complete(proto::CompleteRequest {
            key: "done".into(),
            result: Some(full_result("again")),
            lock_token: done_token,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let mut cache = server.cache().await;
    let hit = cache_get(&mut cache, "ns", "k").await;
    assert!(hit.found);
    assert_eq!(hit.value, b"cached");
    assert_eq!(hit.expires_at.as_ref().map(from_ts), Some(cache_expiry));
    let s = cache_stats(&mut cache).await;
    assert_eq!((s.entries, s.corrupt_values), (1, 0));
    server.stop().await;
}

/// Expired records and entries written before a stop (sweeper slowed to 1 h, so none was
/// swept) are removed after a restart by the sweeper (20 ms), while live ones stay: the
/// trees on disk hold only the live items afterwards.
#[tokio::test]
async fn expired_items_are_gone_after_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let config = |sweep: Duration| {
        let mut c = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        c.idempotency.sweep_interval = sweep;
        c.cache.sweep_interval = sweep;
        c
    };
    let short = Duration::from_millis(100);
    let mut last_expiry = SystemTime::now();
    {
        let server = TestServer::start_with(config(Duration::from_secs(3600))).await;
        let mut idem = server.idempotency().await;
        let mut cache = server.cache().await;
        for i in 0..10 {
            let req = proto::BeginRequest {
                ttl: Some(dur(short)),
                ..begin_req(&format!("old{i}"), "fp")
            };
            idem.begin(req).await.unwrap();
            last_expiry = last_expiry.max(
                cache_put(
                    &mut cache,
                    "ns",
                    &format!("old{i}"),
                    vec![1; 10],
                    Some(short),
                )
                .await
                .unwrap(),
            );
        }
        idem.begin(begin_req("live", "fp")).await.unwrap();
        cache_put(&mut cache, "ns", "live", vec![2; 10], None)
            .await
            .unwrap();
        server.stop().await;
    }
    // Past every short TTL (the latest expiry the server announced).
    let wait = last_expiry
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let server = TestServer::start_with(config(Duration::from_millis(20))).await;
    let mut idem = server.idempotency().await;
    let mut cache = server.cache().await;
    let mut swept = (0, 0);
    for _ in 0..500 {
        let i = idem
            .stats(proto::IdempotencyStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        swept = (
            i.expired_removed,
            cache_stats(&mut cache).await.expired_removed,
        );
        if swept == (10, 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(swept, (10, 10));
    assert!(cache_get(&mut cache, "ns", "live").await.found);
    server.stop().await;
    let store = SledStore::open_within(dir.path(), Duration::from_secs(10)).unwrap();
    for tree in [RecordTree::Idempotency, RecordTree::Cache] {
        let left = store.scan(tree, None, 100).unwrap();
        assert_eq!(left.len(), 1, "{tree:?}: {left:?}");
        assert!(left[0].key.ends_with(b"live"));
    }
}

/// What buckets learned survives a restart: a limit learned from headers (its window fitted
/// from the reset, the guess dropped), the cooldown a 429 set, and the adaptive rate of a
/// header-less upstream. The restarted buckets start slow again until the upstream answers.
#[tokio::test]
async fn restart_keeps_learned_limits_and_cooldowns() {
    use crate::feedback::guessed;
    use crate::support::{acquire_req, put};
    let dir = tempfile::tempdir().unwrap();
    let guess = |name: &str| guessed(name, 1000);
    let report =
        |permit_id: String, status: u32, headers: &[(&str, &str)]| proto::ReportOutcomeRequest {
            permit_id,
            status_code: status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            attempt: 1,
            ..Default::default()
        };
    let cooldown_before = {
        let server = TestServer::start_in(dir.path()).await;
        put(&server, guess("kept:headers")).await;
        put(&server, guess("kept:blind")).await;
        put(
            &server,
            crate::support::resource(
                "kept:known",
                vec![crate::support::limit(
                    "requests",
                    10,
                    Duration::from_secs(60),
                    0,
                )],
                0,
            ),
        )
        .await;
        let mut permits = server.permits().await;
        let g = permits
            .acquire_permit(acquire_req("kept:headers"))
            .await
            .unwrap()
            .into_inner();
        let r = permits
            .report_outcome(report(
                g.permit_id,
                429,
                &[
                    ("x-ratelimit-limit-requests", "10"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1s"),
                    ("retry-after", "30"),
                ],
            ))
            .await
            .unwrap()
            .into_inner();
        let cooldown = from_ts(&r.cooldown_until.expect("a cooldown"));
        for status in [200, 200, 200, 200, 429] {
            let mut req = acquire_req("kept:blind");
            // Paced by the ramp after the probes.
            req.max_wait = Some(dur(Duration::from_secs(2)));
            let g = permits.acquire_permit(req).await.unwrap().into_inner();
            assert!(g.granted);
            permits
                .report_outcome(report(g.permit_id, status, &[("retry-after", "1")]))
                .await
                .unwrap();
        }
        server.stop().await;
        cooldown
    };
    let server = TestServer::start_in(dir.path()).await;
    let mut quotas = server.quotas().await;
    let q = |name: &str| proto::GetQuotaRequest {
        resource: name.into(),
        partition: String::new(),
    };
    let h = quotas
        .get_quota(q("kept:headers"))
        .await
        .unwrap()
        .into_inner();
    let kept = from_ts(h.cooldown_until.as_ref().expect("the cooldown survived"));
    let gap = kept
        .duration_since(cooldown_before)
        .unwrap_or_else(|e| e.duration());
    assert!(gap < Duration::from_millis(5), "cooldown moved by {gap:?}");
    let d = &h.dimensions[0];
    assert_eq!(
        (d.limit, from_dur(d.period.as_ref().unwrap()), d.source),
        // 10 back in 1 s from empty (remaining is rounded down: 9 to 10 units missing): 10
        // per 10/9 s at most, the safe end of what the answer proves.
        (
            10,
            Duration::from_nanos(1_111_111_111),
            proto::LimitSource::Learned as i32
        ),
        "the learned limit replaced the guess: {h:?}"
    );
    assert!(d.reason.contains("fitted"), "{}", d.reason);
    assert_eq!(h.dimensions.len(), 1, "the guess stays dropped");
    assert!(h.probing, "slow start again until the upstream answers");
    let b = quotas
        .get_quota(q("kept:blind"))
        .await
        .unwrap()
        .into_inner();
    let a = b
        .dimensions
        .iter()
        .find(|d| d.source == proto::LimitSource::Adaptive as i32)
        .expect("the adaptive rate survived");
    assert!(a.reason.contains("cut"), "{}", a.reason);
    assert!(a.rate_per_second > 0.0 && a.rate_per_second < 10.0, "{a:?}");
    // A known limit restarts empty, refilling at its rate: no fresh burst after a restart.
    let k = quotas
        .get_quota(q("kept:known"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.dimensions[0].remaining, 0, "{k:?}");
    server.stop().await;
}
