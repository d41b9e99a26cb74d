//! The permit engine conformance suite: one set of cases, run through the real server on
//! the embedded engine, on one Redis, and on a three-node Redis Cluster
//! (`engine_conformance!`, as `store_conformance!` does for stores). What a user may rely
//! on whichever engine is configured is what passes here on all three; where the Redis
//! engine still differs, the case asserts the difference, and [`Engine`]'s methods name it,
//! so closing a gap flips a named exception instead of surprising anyone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use permitd::proto::{self, permits_client::PermitsClient};
use permitd_testkit::{RedisCluster, RedisServer};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{TestServer, dur, limit, put, quota, resource, wait_queue_depth};

/// Which engine a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    Redis,
    RedisCluster,
}

impl Engine {
    /// Named exception: the Redis engine queues its waiters FIFO per replica and ignores
    /// priority; the embedded engine serves higher priority first.
    fn honours_priority(self) -> bool {
        self == Engine::Embedded
    }

    /// Named exception: the Redis engine keeps a learned limit beside the configured one
    /// (both bind; GetQuota lists both), where the embedded engine's learned limit takes
    /// the configured one's place.
    fn learned_replaces_configured(self) -> bool {
        self == Engine::Embedded
    }

    /// Named exception: GetQuota's `denied_total` counts a bucket's denials on the
    /// embedded engine; on the Redis engine it reads 0 (each replica counts its denials in
    /// `/metrics`, per resource).
    fn counts_denials_per_bucket(self) -> bool {
        self == Engine::Embedded
    }

    /// Named exception: a Redis replica holds no partition buckets, so the views over every
    /// partition (GetSummary, ListPartitions, WatchSummaries) are UNIMPLEMENTED there.
    fn partition_views(self) -> bool {
        self == Engine::Embedded
    }
}

/// A server on `engine`, and what backs it.
struct Under {
    server: TestServer,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

/// Start a server on `engine`; `None` when Redis is not installed (outside CI, which fails
/// instead).
async fn start(engine: Engine, test: &str) -> Option<Under> {
    let (redis, cluster, url) = match engine {
        Engine::Embedded => (None, None, None),
        Engine::Redis => {
            let r = RedisServer::for_test(test)?;
            let url = r.url();
            (Some(r), None, Some(url))
        }
        Engine::RedisCluster => {
            let c = RedisCluster::for_test(test)?;
            let url = c.url_list();
            (None, Some(c), Some(url))
        }
    };
    let server = TestServer::start_tuned(|c| {
        if let Some(url) = url {
            c.redis = Some(permitd::cluster::Settings {
                url,
                // The suite shares two cores with the rest: a slow script call must not
                // read as Redis being down (the fault tests cover that).
                op_timeout: Duration::from_secs(2),
                ..permitd::cluster::Settings::default()
            });
        }
    })
    .await;
    Some(Under {
        server,
        _redis: redis,
        _cluster: cluster,
    })
}

fn req(
    resource: &str,
    cost: u64,
    max_wait: Duration,
    priority: i32,
) -> proto::AcquirePermitRequest {
    proto::AcquirePermitRequest {
        resource: resource.into(),
        cost: [("requests".to_owned(), cost)].into(),
        max_wait: Some(dur(max_wait)),
        priority,
        ..Default::default()
    }
}

async fn acquire(
    c: &mut PermitsClient<Channel>,
    r: proto::AcquirePermitRequest,
) -> proto::AcquirePermitResponse {
    c.acquire_permit(r).await.expect("acquire").into_inner()
}

async fn report(
    c: &mut PermitsClient<Channel>,
    permit_id: &str,
    status: u32,
    headers: &[(&str, &str)],
) -> proto::ReportOutcomeResponse {
    c.report_outcome(proto::ReportOutcomeRequest {
        permit_id: permit_id.into(),
        status_code: status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        attempt: 1,
        ..Default::default()
    })
    .await
    .expect("report")
    .into_inner()
}

fn reason(r: &proto::AcquirePermitResponse) -> proto::DenialReason {
    proto::DenialReason::try_from(r.denial_reason).unwrap_or(proto::DenialReason::Unspecified)
}

fn secs(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// Within the limit every call is granted at once; past it the next is denied
/// RATE_LIMITED with the exact wait, and nothing is taken for it.
async fn limit_grants_then_denies(engine: Engine) {
    let Some(u) = start(engine, "limit_grants_then_denies").await else {
        return;
    };
    put(
        &u.server,
        resource(
            "e:rate",
            vec![limit("requests", 3, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    let mut c = u.server.permits().await;
    for i in 0..3 {
        let r = acquire(&mut c, req("e:rate", 1, Duration::ZERO, 0)).await;
        assert!(r.granted, "{engine:?} call {i}: {r:?}");
        assert_eq!(r.remaining.get("requests"), Some(&(2 - i)), "{engine:?}");
    }
    let r = acquire(&mut c, req("e:rate", 1, Duration::ZERO, 0)).await;
    assert!(!r.granted, "{engine:?}: {r:?}");
    assert_eq!(reason(&r), proto::DenialReason::RateLimited, "{engine:?}");
    let wait = secs(r.retry_after.as_ref());
    assert!(
        (19.0..=20.5).contains(&wait),
        "{engine:?}: retry_after {wait}s, one unit of 3/min is 20 s"
    );
    let q = quota(&u.server, "e:rate").await;
    let denied = if engine.counts_denials_per_bucket() {
        1
    } else {
        0
    };
    assert_eq!(
        (q.granted_total, q.denied_total),
        (3, denied),
        "{engine:?}: {q:?}"
    );
}

/// With the one slot held, waiters queue and are served as the slot frees: higher priority
/// first on the embedded engine, arrival order on the Redis engine (its exception).
async fn waiters_in_order(engine: Engine) {
    let Some(u) = start(engine, "waiters_in_order").await else {
        return;
    };
    let mut r = resource("e:queue", vec![], 1);
    r.max_queue = 10;
    put(&u.server, r).await;
    let mut c = u.server.permits().await;
    let holder = acquire(&mut c, req("e:queue", 1, Duration::ZERO, 0)).await;
    assert!(holder.granted, "{engine:?}");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, (label, priority)) in [("0a", 0), ("5a", 5), ("0b", 0), ("1", 1)]
        .into_iter()
        .enumerate()
    {
        let (mut c, order) = (c.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let r = acquire(&mut c, req("e:queue", 1, Duration::from_secs(20), priority)).await;
            assert!(r.granted, "{label}: {r:?}");
            order.lock().expect("order").push(label);
            c.release_permit(proto::ReleasePermitRequest {
                permit_id: r.permit_id,
                refund: false,
            })
            .await
            .expect("release");
        }));
        wait_queue_depth(
            &u.server,
            "e:queue",
            "",
            u32::try_from(i + 1).expect("depth"),
        )
        .await;
    }
    c.release_permit(proto::ReleasePermitRequest {
        permit_id: holder.permit_id,
        refund: false,
    })
    .await
    .expect("release");
    for t in tasks {
        t.await.expect("waiter");
    }
    let got = order.lock().expect("order").clone();
    let want = if engine.honours_priority() {
        ["5a", "1", "0a", "0b"]
    } else {
        ["0a", "5a", "0b", "1"]
    };
    assert_eq!(got, want, "{engine:?}");
    let q = quota(&u.server, "e:queue").await;
    assert_eq!((q.in_flight, q.queue_depth), (0, 0), "{engine:?}");
}

/// A waiter whose max_wait passes is denied then, not before and not much after, and
/// takes nothing.
async fn max_wait_is_a_deadline(engine: Engine) {
    let Some(u) = start(engine, "max_wait_is_a_deadline").await else {
        return;
    };
    put(&u.server, resource("e:wait", vec![], 1)).await;
    let mut c = u.server.permits().await;
    let holder = acquire(&mut c, req("e:wait", 1, Duration::ZERO, 0)).await;
    assert!(holder.granted);
    let t0 = Instant::now();
    let r = acquire(&mut c, req("e:wait", 1, Duration::from_millis(300), 0)).await;
    let waited = t0.elapsed();
    assert!(!r.granted, "{engine:?}: {r:?}");
    assert_eq!(reason(&r), proto::DenialReason::QueueTimeout, "{engine:?}");
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(1500),
        "{engine:?}: answered after {waited:?}"
    );
    let q = quota(&u.server, "e:wait").await;
    assert_eq!((q.in_flight, q.queue_depth), (1, 0), "{engine:?}");
}

/// A permit never released is reclaimed when its lease ends: the slot comes back, and the
/// dead permit's id is NOT_FOUND afterwards.
async fn lease_ends_and_slot_returns(engine: Engine) {
    let Some(u) = start(engine, "lease_ends_and_slot_returns").await else {
        return;
    };
    put(&u.server, resource("e:lease", vec![], 1)).await;
    let mut c = u.server.permits().await;
    let mut first = req("e:lease", 1, Duration::ZERO, 0);
    first.lease = Some(dur(Duration::from_millis(400)));
    let dead = acquire(&mut c, first).await;
    assert!(dead.granted, "{engine:?}");
    let t0 = Instant::now();
    let next = acquire(&mut c, req("e:lease", 1, Duration::from_secs(10), 0)).await;
    assert!(next.granted, "{engine:?}: {next:?}");
    let after = t0.elapsed();
    assert!(
        after < Duration::from_secs(5),
        "{engine:?}: reclaimed after {after:?}"
    );
    let e = c
        .release_permit(proto::ReleasePermitRequest {
            permit_id: dead.permit_id,
            refund: true,
        })
        .await
        .expect_err("the dead permit");
    assert_eq!(e.code(), Code::NotFound, "{engine:?}: {e:?}");
}

/// What a call really used is what it costs: a report's actual cost refunds the
/// difference; releasing twice is NOT_FOUND and changes nothing.
async fn actual_cost_reconciles(engine: Engine) {
    let Some(u) = start(engine, "actual_cost_reconciles").await else {
        return;
    };
    put(
        &u.server,
        resource(
            "e:cost",
            vec![limit("tokens", 1000, Duration::from_secs(3600), 0)],
            0,
        ),
    )
    .await;
    let mut c = u.server.permits().await;
    let mut r = req("e:cost", 1, Duration::ZERO, 0);
    r.cost = [("tokens".to_owned(), 600)].into();
    let p = acquire(&mut c, r.clone()).await;
    assert!(p.granted, "{engine:?}");
    assert_eq!(p.remaining.get("tokens"), Some(&400), "{engine:?}");
    c.report_outcome(proto::ReportOutcomeRequest {
        permit_id: p.permit_id.clone(),
        status_code: 200,
        actual_cost: [("tokens".to_owned(), 100)].into(),
        attempt: 1,
        ..Default::default()
    })
    .await
    .expect("report");
    let again = c
        .release_permit(proto::ReleasePermitRequest {
            permit_id: p.permit_id,
            refund: true,
        })
        .await
        .expect_err("released already");
    assert_eq!(again.code(), Code::NotFound, "{engine:?}");
    r.cost = [("tokens".to_owned(), 850)].into();
    let big = acquire(&mut c, r).await;
    assert!(
        big.granted,
        "{engine:?}: 900 left after the reconcile: {big:?}"
    );
    assert_eq!(big.remaining.get("tokens"), Some(&50), "{engine:?}");
}

/// A 429 with Retry-After pauses the resource for every caller until then: the next
/// acquire is denied COOLDOWN with the wait, GetQuota shows it; ResetResource clears it.
async fn cooldown_pauses_everyone_until_reset(engine: Engine) {
    let Some(u) = start(engine, "cooldown_pauses_everyone_until_reset").await else {
        return;
    };
    put(
        &u.server,
        resource(
            "e:cool",
            vec![limit("requests", 100, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    let mut c = u.server.permits().await;
    let p = acquire(&mut c, req("e:cool", 1, Duration::ZERO, 0)).await;
    let advice = report(&mut c, &p.permit_id, 429, &[("retry-after", "30")]).await;
    assert!(advice.retry, "{engine:?}: {advice:?}");
    assert!(
        secs(advice.retry_after.as_ref()) >= 29.0,
        "{engine:?}: {advice:?}"
    );
    let r = acquire(&mut c, req("e:cool", 1, Duration::ZERO, 0)).await;
    assert!(!r.granted, "{engine:?}");
    assert_eq!(reason(&r), proto::DenialReason::Cooldown, "{engine:?}");
    assert!(secs(r.retry_after.as_ref()) >= 28.0, "{engine:?}: {r:?}");
    assert!(
        quota(&u.server, "e:cool").await.cooldown_until.is_some(),
        "{engine:?}"
    );
    u.server
        .quotas()
        .await
        .reset_resource(proto::ResetResourceRequest {
            name: "e:cool".into(),
        })
        .await
        .expect("reset");
    let r = acquire(&mut c, req("e:cool", 1, Duration::ZERO, 0)).await;
    assert!(r.granted, "{engine:?}: reset cleared the cooldown: {r:?}");
}

/// The upstream's headers teach its real limit: GetQuota shows it as learned, and grants
/// follow it.
async fn headers_teach_the_limit(engine: Engine) {
    let Some(u) = start(engine, "headers_teach_the_limit").await else {
        return;
    };
    put(
        &u.server,
        resource(
            "e:learn",
            vec![limit("requests", 1000, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    let mut c = u.server.permits().await;
    let p = acquire(&mut c, req("e:learn", 1, Duration::ZERO, 0)).await;
    let out = report(
        &mut c,
        &p.permit_id,
        200,
        &[
            ("x-ratelimit-limit-requests", "5"),
            ("x-ratelimit-remaining-requests", "2"),
            ("x-ratelimit-reset-requests", "60s"),
        ],
    )
    .await;
    assert!(!out.learned.is_empty(), "{engine:?}: {out:?}");
    let q = quota(&u.server, "e:learn").await;
    let learned = q
        .dimensions
        .iter()
        .find(|d| d.dimension == "requests" && d.source == proto::LimitSource::Learned as i32)
        .unwrap_or_else(|| panic!("{engine:?}: nothing learned: {q:?}"));
    assert_eq!(learned.limit, 5, "{engine:?}: {learned:?}");
    if !engine.learned_replaces_configured() {
        assert!(
            q.dimensions.iter().any(|d| d.limit == 1000),
            "{engine:?}: {q:?}"
        );
    }
    // Two left as the upstream said: two more grants, then a denial.
    for _ in 0..2 {
        assert!(
            acquire(&mut c, req("e:learn", 1, Duration::ZERO, 0))
                .await
                .granted,
            "{engine:?}"
        );
    }
    assert!(
        !acquire(&mut c, req("e:learn", 1, Duration::ZERO, 0))
            .await
            .granted,
        "{engine:?}"
    );
}

/// PutResource over an existing resource starts it afresh: its cooldown, learned limits
/// and spent units go.
async fn replacing_a_resource_starts_it_afresh(engine: Engine) {
    let Some(u) = start(engine, "replacing_a_resource_starts_it_afresh").await else {
        return;
    };
    let def = resource(
        "e:again",
        vec![limit("requests", 2, Duration::from_secs(3600), 0)],
        0,
    );
    put(&u.server, def.clone()).await;
    let mut c = u.server.permits().await;
    let p = acquire(&mut c, req("e:again", 2, Duration::ZERO, 0)).await;
    report(&mut c, &p.permit_id, 429, &[("retry-after", "600")]).await;
    assert!(
        !acquire(&mut c, req("e:again", 1, Duration::ZERO, 0))
            .await
            .granted
    );
    put(&u.server, def).await;
    let r = acquire(&mut c, req("e:again", 2, Duration::ZERO, 0)).await;
    assert!(
        r.granted,
        "{engine:?}: the replaced resource kept old state: {r:?}"
    );
    assert!(
        quota(&u.server, "e:again").await.cooldown_until.is_none(),
        "{engine:?}"
    );
}

/// Watch shows a grant: the snapshot, then the bucket with the permit in flight.
async fn watch_shows_a_grant(engine: Engine) {
    let Some(u) = start(engine, "watch_shows_a_grant").await else {
        return;
    };
    put(
        &u.server,
        resource(
            "e:watch",
            vec![limit("requests", 10, Duration::from_secs(60), 0)],
            5,
        ),
    )
    .await;
    let mut stream = u
        .server
        .quotas()
        .await
        .watch(proto::WatchRequest {
            resource_prefix: "e:".into(),
            min_interval: Some(dur(Duration::from_millis(10))),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a snapshot")
        .expect("stream")
        .expect("an update");
    assert_eq!(first.resource, "e:watch", "{engine:?}");
    let mut c = u.server.permits().await;
    assert!(
        acquire(&mut c, req("e:watch", 1, Duration::ZERO, 0))
            .await
            .granted
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = tokio::time::timeout_at(deadline.into(), stream.message())
            .await
            .unwrap_or_else(|_| panic!("{engine:?}: the grant never showed"))
            .expect("stream")
            .expect("an update");
        if u.in_flight == 1 {
            break;
        }
    }
}

/// The views over every partition: served embedded; the Redis engine's named exception.
async fn partition_views(engine: Engine) {
    let Some(u) = start(engine, "partition_views").await else {
        return;
    };
    let mut r = resource(
        "e:parts",
        vec![limit("requests", 10, Duration::from_secs(60), 0)],
        0,
    );
    r.per_partition = true;
    put(&u.server, r).await;
    let mut c = u.server.permits().await;
    for p in ["a", "b"] {
        let mut q = req("e:parts", 1, Duration::ZERO, 0);
        q.partition = p.into();
        assert!(acquire(&mut c, q).await.granted);
    }
    let got = u
        .server
        .quotas()
        .await
        .get_summary(proto::GetSummaryRequest {
            resource: "e:parts".into(),
            ..Default::default()
        })
        .await;
    if engine.partition_views() {
        let s = got.expect("summary").into_inner();
        assert_eq!(s.live_partitions, 2, "{s:?}");
    } else {
        assert_eq!(
            got.expect_err("exception").code(),
            Code::Unimplemented,
            "{engine:?}"
        );
    }
}

macro_rules! engine_conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Engine::Embedded).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Engine::Redis).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Engine::RedisCluster).await;
                }
            )*
        }
    };
}

engine_conformance!(
    limit_grants_then_denies,
    waiters_in_order,
    max_wait_is_a_deadline,
    lease_ends_and_slot_returns,
    actual_cost_reconciles,
    cooldown_pauses_everyone_until_reset,
    headers_teach_the_limit,
    replacing_a_resource_starts_it_afresh,
    watch_shows_a_grant,
    partition_views,
    limits_beyond_exact_integers,
);

/// Named exception: the Redis engine refuses limits its scripts cannot hold exactly
/// (`burst x period / gcd` from 2^52), naming the limit; the embedded engine's u128 math
/// holds every limit the definition's own bounds allow.
async fn limits_beyond_exact_integers(engine: Engine) {
    let Some(u) = start(engine, "limits_beyond_exact_integers").await else {
        return;
    };
    let huge = limit(
        "requests",
        1_000_000_000_000,
        Duration::from_secs(366 * 24 * 3600),
        0,
    );
    let got = u
        .server
        .quotas()
        .await
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource("e:huge", vec![huge], 0)),
        })
        .await;
    if engine == Engine::Embedded {
        got.expect("the embedded engine holds it");
    } else {
        let e = got.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{engine:?}: {e:?}");
        assert!(
            e.message().contains("limits[0]") && e.message().contains("2^52"),
            "{}",
            e.message()
        );
        // Nothing was stored.
        let q = u
            .server
            .quotas()
            .await
            .get_quota(proto::GetQuotaRequest {
                resource: "e:huge".into(),
                partition: String::new(),
            })
            .await;
        assert_eq!(q.expect_err("not defined").code(), Code::NotFound);
    }
}

/// The GCRA of the Redis scripts (common.lua's `ahead_of`, `wait_for`, `taken`,
/// `available`, run by EVAL at the instants given) decides exactly as the embedded one
/// (`permits::limit::LimitState`) on random limits and arrival sequences: the same grants,
/// the same waits (to the microsecond the scripts count in), the same units left, up to the
/// largest limits the engine admits.
#[test]
fn lua_gcra_matches_rust() {
    use permitd::permits::limit::{LimitState, Rate};
    use proptest::prelude::*;
    let Some(redis) = RedisServer::for_test("lua_gcra_matches_rust") else {
        return;
    };
    let client = ::redis::Client::open(redis.url()).expect("client");
    // The runner takes a `Fn`: the connection is borrowed per case.
    let con = std::cell::RefCell::new(client.get_connection().expect("connection"));
    let harness = format!(
        "{}\n{}",
        include_str!("../../src/cluster/lua/common.lua"),
        r"
local s = {key = KEYS[1], name = 'x', a = tonumber(ARGV[1]), p = tonumber(ARGV[2]), b = tonumber(ARGV[3])}
redis.call('DEL', s.key)
local out = {}
for i = 4, #ARGV, 2 do
  local now, c = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local ahead = ahead_of(s.key, s.name, s.a, now)
  local w = wait_for(s, ahead, c)
  if w == 0 then
    ahead = taken(s, ahead, c)
    put_ahead(s.key, s.name, ahead, now)
  end
  out[#out + 1] = int(w)
  out[#out + 1] = available(s, ahead)
end
return out
"
    );
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // Amounts up to 10^12, periods from 1 ms to a year (whole µs), bursts up to what the
    // engine admits; arrivals at whole µs from a realistic epoch, gaps around the emission
    // interval so both grants and waits occur.
    let case = (1u64..=1_000_000_000_000, 1_000u64..=31_622_400_000_000)
        .prop_flat_map(|(amount, period_us)| {
            let p = period_us / gcd(amount, period_us);
            let max_burst = (((1u64 << 52) - 1) / p)
                .min(amount.saturating_mul(10))
                .max(1);
            (Just(amount), Just(period_us), 1..=max_burst)
        })
        .prop_flat_map(|(amount, period_us, burst)| {
            let interval = (period_us / amount).max(1);
            let arrivals = proptest::collection::vec(
                (0..=interval.saturating_mul(3), 1..=burst.min(1000)),
                1..40,
            );
            (Just(amount), Just(period_us), Just(burst), arrivals)
        });
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 200,
        ..Default::default()
    });
    runner
        .run(&case, |(amount, period_us, burst, arrivals)| {
            let g = gcd(amount, period_us);
            let (a, p) = (amount / g, period_us / g);
            let mut args = vec![a.to_string(), p.to_string(), burst.to_string()];
            let mut t_us: u64 = 1_796_000_000_000_000;
            let mut times = Vec::new();
            for (dt, cost) in &arrivals {
                t_us += dt;
                times.push((t_us, *cost));
                args.push(t_us.to_string());
                args.push(cost.to_string());
            }
            let lua: Vec<i64> = ::redis::cmd("EVAL")
                .arg(&harness)
                .arg(1)
                .arg("gcra-test")
                .arg(&args)
                .query(&mut *con.borrow_mut())
                .expect("eval");
            let mut rust = LimitState::new(Rate {
                amount,
                period_ns: period_us * 1000,
                burst,
            });
            for (k, (t, cost)) in times.iter().enumerate() {
                let now = t * 1000;
                let wait_ns = rust.wait_for(*cost, now).expect("cost within the burst");
                if wait_ns == 0 {
                    rust.take(*cost, now);
                }
                let wait_us = i64::try_from(wait_ns.div_ceil(1000)).expect("wait");
                prop_assert_eq!(
                    (lua[2 * k], lua[2 * k + 1]),
                    (wait_us, i64::try_from(rust.available(now)).expect("units")),
                    "arrival {} of {:?} at {} µs, cost {}: {} per {} µs, burst {}",
                    k,
                    arrivals.len(),
                    t,
                    cost,
                    amount,
                    period_us,
                    burst
                );
            }
            Ok(())
        })
        .expect("the scripts' GCRA and the embedded one agree");
}
