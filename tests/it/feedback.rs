//! Header feedback end to end: a real HTTP upstream (axum on 127.0.0.1:0) that enforces its
//! own limit and answers in a chosen dialect; 16 workers acquire from permitd, call it over
//! HTTP (hyper), and report what came back.

// The simulated upstream does its bucket math in floats, as simple upstreams do.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_lossless
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use permitd::proto;

use crate::support::{TestServer, acquire_req, dur, from_ts, limit, put, resource};

const WORKERS: usize = 16;
const LEASE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    /// OpenAI's `x-ratelimit-*-requests` with Go-style durations.
    OpenAi,
    /// IETF `RateLimit-Policy` / `RateLimit` structured fields.
    Ietf,
    /// No rate-limit headers at all: a 429 says only `Retry-After` (Slack's Web API).
    None,
}

/// The upstream: a token bucket of `amount` per `period` (tolerating `slack` extra units, as
/// real upstreams do for clock jitter), answering 429 + Retry-After when it is empty.
struct Upstream {
    dialect: Dialect,
    amount: f64,
    period: Duration,
    slack: f64,
    bucket: Mutex<(f64, Instant)>,
    /// When set, the next call gets a 429 with `Retry-After: 1` whatever the bucket says.
    force_429: AtomicBool,
    /// (arrival, server grant instant of the permit in ns since the epoch, status).
    calls: Mutex<Vec<(Instant, u128, u16)>>,
    ok: AtomicU64,
    limited: AtomicU64,
}

impl Upstream {
    fn new(dialect: Dialect, amount: u64, period: Duration) -> Arc<Self> {
        let amount = amount as f64;
        Arc::new(Self {
            dialect,
            amount,
            period,
            slack: 2.0,
            bucket: Mutex::new((amount + 2.0, Instant::now())),
            force_429: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            ok: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        })
    }

    /// Take one unit: (allowed, remaining after, seconds until one more unit, seconds until
    /// the shown quota is whole again).
    fn take(&self) -> (bool, u64, f64, f64) {
        let mut b = self.bucket.lock().unwrap();
        let now = Instant::now();
        let rate = self.amount / self.period.as_secs_f64();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(self.amount + self.slack);
        b.1 = now;
        let allowed = b.0 >= 1.0;
        if allowed {
            b.0 -= 1.0;
        }
        let shown = (b.0 - self.slack).max(0.0);
        let until_one = if b.0 >= 1.0 { 0.0 } else { (1.0 - b.0) / rate };
        let until_full = (self.amount - shown) / rate;
        (allowed, shown.floor() as u64, until_one, until_full)
    }

    fn headers(&self, remaining: u64, until_full: f64, h: &mut HeaderMap) {
        let amount = self.amount as u64;
        let mut set = |k: &'static str, v: String| {
            h.insert(k, HeaderValue::from_str(&v).unwrap());
        };
        match self.dialect {
            // As OpenAI documents it: the limit is the bucket's capacity, the reset the time
            // until it is whole again.
            Dialect::OpenAi => {
                set("x-ratelimit-limit-requests", amount.to_string());
                set("x-ratelimit-remaining-requests", remaining.to_string());
                set(
                    "x-ratelimit-reset-requests",
                    format!("{}ms", (until_full * 1000.0).ceil()),
                );
            }
            Dialect::Ietf => {
                set(
                    "ratelimit-policy",
                    format!("\"default\";q={amount};w={}", self.period.as_secs()),
                );
                set(
                    "ratelimit",
                    format!("\"default\";r={remaining};t={}", until_full.ceil()),
                );
            }
            Dialect::None => {}
        }
    }
}

async fn handle(State(up): State<Arc<Upstream>>, req: HeaderMap) -> (StatusCode, HeaderMap) {
    let granted_at = req
        .get("x-granted-at")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u128>().ok())
        .unwrap_or(0);
    let mut h = HeaderMap::new();
    let forced = up.force_429.swap(false, Ordering::SeqCst);
    let (allowed, remaining, until_one, until_full) = up.take();
    let status = if forced || !allowed {
        up.limited.fetch_add(1, Ordering::Relaxed);
        let secs = if forced {
            1
        } else {
            until_one.ceil().max(1.0) as u64
        };
        h.insert(
            "retry-after",
            HeaderValue::from_str(&secs.to_string()).unwrap(),
        );
        StatusCode::TOO_MANY_REQUESTS
    } else {
        up.ok.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    };
    up.headers(remaining, until_full, &mut h);
    up.calls
        .lock()
        .unwrap()
        .push((Instant::now(), granted_at, status.as_u16()));
    (status, h)
}

async fn start_upstream(up: Arc<Upstream>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/call", get(handle)).with_state(up);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/call")
}

/// What the workers saw.
struct Outcome {
    calls: u64,
    limited: u64,
    /// 429s among calls made after the first `period` (once permitd has learned).
    limited_after_first_reset: u64,
    calls_after_first_reset: u64,
    cooldown: Option<(u128, u128)>,
}

/// 16 workers: acquire (queueing), call the upstream, report; for `length`.
async fn run_workers(
    server: &TestServer,
    name: &str,
    url: &str,
    length: Duration,
    settle: Duration,
) -> Outcome {
    run_fleet(server, name, url, length, settle, WORKERS).await
}

/// `workers` workers: acquire (queueing), call the upstream, report; for `length`.
async fn run_fleet(
    server: &TestServer,
    name: &str,
    url: &str,
    length: Duration,
    settle: Duration,
    workers: usize,
) -> Outcome {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let start = Instant::now();
    let end = start + length;
    let calls = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let late = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let cooldown = Arc::new(Mutex::new(None));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut permits = server.permits().await;
        let (client, url, name) = (client.clone(), url.to_owned(), name.to_owned());
        let (calls, limited, late, cooldown) = (
            calls.clone(),
            limited.clone(),
            late.clone(),
            cooldown.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut req = acquire_req(&name);
                req.max_wait = Some(dur(end.saturating_duration_since(Instant::now())));
                req.lease = Some(dur(LEASE));
                req.client_id = format!("worker-{w}");
                let g = permits.acquire_permit(req).await.unwrap().into_inner();
                if !g.granted {
                    continue;
                }
                let granted_at = (from_ts(g.lease_expires_at.as_ref().unwrap()) - LEASE)
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let http = axum::http::Request::get(url.as_str())
                    .header("x-granted-at", granted_at.to_string())
                    .body(Empty::new())
                    .unwrap();
                let resp = client.request(http).await.unwrap();
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                calls.fetch_add(1, Ordering::Relaxed);
                let after_settle = start.elapsed() >= settle;
                if after_settle {
                    late.1.fetch_add(1, Ordering::Relaxed);
                }
                if status == 429 {
                    limited.fetch_add(1, Ordering::Relaxed);
                    if after_settle {
                        late.0.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let r = permits
                    .report_outcome(proto::ReportOutcomeRequest {
                        permit_id: g.permit_id,
                        status_code: u32::from(status),
                        headers,
                        attempt: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if status == 429
                    && let Some(until) = r.cooldown_until
                {
                    let until = from_ts(&until)
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap();
                    let retry = r.retry_after.map(|d| crate::support::from_dur(&d)).unwrap();
                    assert!(r.retry, "a 429 is worth a retry");
                    assert!(retry > Duration::ZERO, "never a zero delay after a 429");
                    cooldown.lock().unwrap().get_or_insert((
                        (until - Duration::from_secs(1)).as_nanos(),
                        until.as_nanos(),
                    ));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Outcome {
        calls: calls.load(Ordering::Relaxed),
        limited: limited.load(Ordering::Relaxed),
        limited_after_first_reset: late.0.load(Ordering::Relaxed),
        calls_after_first_reset: late.1.load(Ordering::Relaxed),
        cooldown: *cooldown.lock().unwrap(),
    }
}

/// With the upstream's limit configured in permitd, 16 workers make 0 upstream 429s while
/// using nearly all of its capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limit_no_429() {
    let server = TestServer::start().await;
    let (amount, period) = (50, Duration::from_secs(1));
    let up = Upstream::new(Dialect::OpenAi, amount, period);
    let url = start_upstream(up.clone()).await;
    put(
        &server,
        resource(
            "up:configured",
            vec![limit("requests", amount, period, 0)],
            0,
        ),
    )
    .await;
    let length = Duration::from_secs(3);
    let o = run_workers(&server, "up:configured", &url, length, Duration::ZERO).await;
    let capacity = amount as f64 * (1.0 + length.as_secs_f64() / period.as_secs_f64());
    let util = o.calls as f64 / capacity;
    println!(
        "RESULT feedback_configured dialect=openai workers={WORKERS} calls={} upstream_429={} utilisation={util:.3}",
        o.calls, o.limited
    );
    assert_eq!(
        o.limited, 0,
        "configured limit must keep the upstream free of 429s"
    );
    assert!(util >= 0.9, "utilisation {util}");
    server.stop().await;
}

/// With no limit configured, permitd learns it from IETF RateLimit headers: after the
/// first reset fewer than 1 % of calls get a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_limit_under_one_percent_429() {
    let server = TestServer::start().await;
    let (amount, period) = (50, Duration::from_secs(1));
    let up = Upstream::new(Dialect::Ietf, amount, period);
    let url = start_upstream(up.clone()).await;
    put(&server, resource("up:learned", vec![], 0)).await;
    let length = Duration::from_secs(4);
    let o = run_workers(&server, "up:learned", &url, length, period).await;
    let rate = o.limited_after_first_reset as f64 / o.calls_after_first_reset.max(1) as f64;
    let capacity = amount as f64 * (1.0 + length.as_secs_f64() / period.as_secs_f64());
    let util = o.calls as f64 / capacity;
    println!(
        "RESULT feedback_learned dialect=ietf workers={WORKERS} calls={} upstream_429_total={} after_first_reset_calls={} after_first_reset_429={} rate_429={rate:.4} utilisation={util:.3}",
        o.calls, o.limited, o.calls_after_first_reset, o.limited_after_first_reset
    );
    assert!(rate < 0.01, "429 rate after the first reset {rate}");
    assert!(util >= 0.8, "utilisation {util}");
    let q = server
        .quotas()
        .await
        .get_quota(proto::GetQuotaRequest {
            resource: "up:learned".into(),
            partition: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let d = q
        .dimensions
        .iter()
        .find(|d| d.dimension == "requests")
        .expect("learned requests limit");
    assert_eq!(d.limit, amount);
    assert_eq!(d.source, proto::LimitSource::Learned as i32);
    server.stop().await;
}

/// One worker's 429 with `Retry-After: 1` pauses the resource for every worker: no permit
/// is granted, so no worker's call reaches the upstream, until the cooldown ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_worker() {
    let server = TestServer::start().await;
    let up = Upstream::new(Dialect::OpenAi, 1000, Duration::from_secs(1));
    let url = start_upstream(up.clone()).await;
    put(
        &server,
        resource(
            "up:pause",
            vec![limit("requests", 200, Duration::from_secs(1), 0)],
            0,
        ),
    )
    .await;
    let trigger = {
        let up = up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            up.force_429.store(true, Ordering::SeqCst);
        })
    };
    let o = run_workers(
        &server,
        "up:pause",
        &url,
        Duration::from_millis(1800),
        Duration::ZERO,
    )
    .await;
    trigger.await.unwrap();
    let (start, end) = o.cooldown.expect("the 429 was reported and set a cooldown");
    let (granted_inside, after) = {
        let calls = up.calls.lock().unwrap();
        (
            calls.iter().filter(|c| c.1 > start && c.1 < end).count(),
            calls.iter().filter(|c| c.1 >= end).count(),
        )
    };
    println!(
        "RESULT feedback_cooldown workers={WORKERS} calls={} upstream_429={} granted_during_cooldown={granted_inside} calls_after_cooldown={after}",
        o.calls, o.limited
    );
    assert_eq!(o.limited, 1, "only the forced 429");
    assert_eq!(
        granted_inside, 0,
        "no permit may be granted while the resource cools down"
    );
    assert!(after > 0, "work resumes after the cooldown");
    server.stop().await;
}

/// A resource whose limit is a guess (limits not known): slow start and learning apply.
pub fn guessed(name: &str, per_second: u64) -> proto::Resource {
    let mut r = resource(
        name,
        vec![limit("requests", per_second, Duration::from_secs(1), 0)],
        0,
    );
    r.limits_known = None;
    r
}

/// (refused share, utilisation) of a run against `up` of `amount` per `period`.
fn figures(
    up: &Upstream,
    o: &Outcome,
    amount: u64,
    period: Duration,
    length: Duration,
) -> (f64, f64) {
    let capacity = amount as f64 * (1.0 + length.as_secs_f64() / period.as_secs_f64());
    let util = up.ok.load(Ordering::Relaxed) as f64 / capacity;
    (o.limited as f64 / o.calls.max(1) as f64, util)
}

/// A cold start against a guess 100x too high: 50 workers, a token bucket of 10/s (burst 10)
/// that the resource guesses at 1 000/s. Slow start lets one probe through until the first
/// answer teaches the limit (OpenAI: the window fitted from the reset; IETF: stated), so the
/// first wave does not storm: at most a few 429s in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_against_a_guess_does_not_storm() {
    let server = TestServer::start().await;
    for (name, dialect) in [("openai", Dialect::OpenAi), ("ietf", Dialect::Ietf)] {
        let (amount, period) = (10, Duration::from_secs(1));
        let up = Upstream::new(dialect, amount, period);
        let url = start_upstream(up.clone()).await;
        let res = format!("up:cold:{name}");
        put(&server, guessed(&res, 1000)).await;
        let length = Duration::from_secs(4);
        let o = run_fleet(&server, &res, &url, length, Duration::ZERO, 50).await;
        let (refused, util) = figures(&up, &o, amount, period, length);
        println!(
            "RESULT feedback_cold_start dialect={name} workers=50 guess=1000/s upstream=10/s calls={} upstream_429={} refused={refused:.4} utilisation={util:.3}",
            o.calls, o.limited
        );
        assert!(
            o.limited <= 1,
            "{name}: {} of {} calls refused",
            o.limited,
            o.calls
        );
        assert!(util >= 0.85, "{name}: utilisation {util}");
    }
    server.stop().await;
}

/// An upstream that sends no rate-limit headers (429 + Retry-After only): slow start, then
/// the adaptive rate ramps, is cut on each 429 and paces the fleet at a cooldown's end, so
/// the fleet does not storm every second. GetQuota shows the adaptive rate and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_less_upstream_does_not_storm() {
    let server = TestServer::start().await;
    let (amount, period) = (10, Duration::from_secs(1));
    let up = Upstream::new(Dialect::None, amount, period);
    let url = start_upstream(up.clone()).await;
    put(&server, guessed("up:blind", 1000)).await;
    let length = Duration::from_secs(8);
    let o = run_fleet(&server, "up:blind", &url, length, Duration::ZERO, 50).await;
    let (refused, util) = figures(&up, &o, amount, period, length);
    println!(
        "RESULT feedback_header_less workers=50 guess=1000/s upstream=10/s calls={} upstream_429={} refused={refused:.4} utilisation={util:.3}",
        o.calls, o.limited
    );
    assert!(refused < 0.05, "{} of {} calls refused", o.limited, o.calls);
    assert!(util >= 0.75, "utilisation {util}");
    let q = server
        .quotas()
        .await
        .get_quota(proto::GetQuotaRequest {
            resource: "up:blind".into(),
            partition: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let d = q
        .dimensions
        .iter()
        .find(|d| d.source == proto::LimitSource::Adaptive as i32)
        .expect("an adaptive limit");
    assert!(d.reason.starts_with("adaptive"), "{}", d.reason);
    assert!(
        d.rate_per_second > 3.0 && d.rate_per_second < 30.0,
        "adaptive rate {} near the upstream's 10/s",
        d.rate_per_second
    );
    assert!(!q.probing);
    server.stop().await;
}

/// After a fixed-window `remaining: 0` (classic X-RateLimit-*, reset in 3 s) the denial's
/// retry_after is the reset, not one unit at the rate, and so is the retry advice of
/// ReportOutcome and ComputeBackoff: a worker that trusts it is not refused again.
#[tokio::test]
async fn retry_after_is_the_block_not_one_unit() {
    let server = TestServer::start().await;
    let mut r = resource(
        "up:window",
        vec![limit("requests", 100, Duration::from_secs(60), 0)],
        0,
    );
    r.limits_known = None;
    put(&server, r).await;
    let mut permits = server.permits().await;
    let g = permits
        .acquire_permit(acquire_req("up:window"))
        .await
        .unwrap()
        .into_inner();
    let headers = [
        ("x-ratelimit-limit", "100"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "3"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let advice = permits
        .report_outcome(proto::ReportOutcomeRequest {
            permit_id: g.permit_id,
            status_code: 429,
            headers,
            attempt: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let advised = crate::support::from_dur(advice.retry_after.as_ref().unwrap());
    let d = permits
        .acquire_permit(acquire_req("up:window"))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.granted);
    let retry_after = crate::support::from_dur(d.retry_after.as_ref().unwrap());
    let backoff = permits
        .compute_backoff(proto::ComputeBackoffRequest {
            resource: "up:window".into(),
            attempt: 1,
            status_code: 503,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let backoff = crate::support::from_dur(backoff.retry_after.as_ref().unwrap());
    println!(
        "RESULT retry_after_fixed_window denial_ms={} report_advice_ms={} compute_backoff_ms={}",
        retry_after.as_millis(),
        advised.as_millis(),
        backoff.as_millis()
    );
    for (what, wait) in [
        ("denial", retry_after),
        ("report advice", advised),
        ("ComputeBackoff", backoff),
    ] {
        assert!(
            wait > Duration::from_millis(2_900) && wait <= Duration::from_secs(3),
            "{what}: {wait:?}, the block lasts 3 s"
        );
    }
    server.stop().await;
}

/// A reset stated as an instant (Anthropic's RFC 3339) proves a refill counted from when the
/// upstream answered: a report made later (at the end of a stream) says how much later
/// with `answered_ago`, and the learned window is not shortened by the wait. A report under
/// a permit cannot place the answer before the grant; a bad value is refused naming the
/// field and settles nothing.
#[tokio::test]
async fn answered_ago_reads_instant_resets_as_of_the_answer() {
    let server = TestServer::start().await;
    for name in ["up:ago", "up:now", "up:clamped"] {
        let mut r = resource(name, vec![], 0);
        r.limits_known = None;
        r.learn_from_headers = Some(true);
        r.dimensions = vec!["requests".into()];
        r.accept_feedback_without_permit = Some(true);
        put(&server, r).await;
    }
    // Full again at a whole second 3-4 s from now: 1 unit short of 10.
    let whole = SystemTime::now() + Duration::from_secs(4);
    let at = humantime::format_rfc3339_seconds(whole).to_string();
    let headers: std::collections::HashMap<String, String> = [
        ("anthropic-ratelimit-requests-limit", "10"),
        ("anthropic-ratelimit-requests-remaining", "9"),
        ("anthropic-ratelimit-requests-reset", at.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut permits = server.permits().await;
    let report =
        |resource: &str, permit_id: String, ago: Option<Duration>| proto::ReportOutcomeRequest {
            resource: if permit_id.is_empty() {
                resource.into()
            } else {
                String::new()
            },
            permit_id,
            status_code: 200,
            headers: headers.clone(),
            attempt: 1,
            answered_ago: ago.map(dur),
            ..Default::default()
        };
    let held = permits
        .acquire_permit(acquire_req("up:clamped"))
        .await
        .unwrap()
        .into_inner();
    let bad = permits
        .report_outcome(proto::ReportOutcomeRequest {
            answered_ago: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..report("", held.permit_id.clone(), None)
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("answered_ago"), "{}", bad.message());
    let ago = Some(Duration::from_secs(1));
    for (resource, id) in [
        ("up:ago", String::new()),
        ("up:now", String::new()),
        ("up:clamped", held.permit_id),
    ] {
        let ago = if resource == "up:now" { None } else { ago };
        permits
            .report_outcome(report(resource, id, ago))
            .await
            .unwrap();
    }
    let mut quotas = server.quotas().await;
    let mut periods = Vec::new();
    for resource in ["up:ago", "up:now", "up:clamped"] {
        let got = quotas
            .get_quota(proto::GetQuotaRequest {
                resource: resource.into(),
                partition: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let d = got
            .dimensions
            .iter()
            .find(|d| d.dimension == "requests")
            .expect("learned");
        periods.push(crate::support::from_dur(d.period.as_ref().expect("a period")).as_secs_f64());
    }
    let [with_ago, as_of_now, clamped] = periods[..] else {
        unreachable!("three resources")
    };
    println!(
        "RESULT answered_ago window_with={with_ago:.2}s as_of_report={as_of_now:.2}s clamped={clamped:.2}s"
    );
    // One unit back in the reset: the window is 10 x the reset; a second more of it each.
    assert!(
        (with_ago - as_of_now - 10.0).abs() < 0.5,
        "{with_ago} vs {as_of_now}"
    );
    assert!(
        (clamped - as_of_now).abs() < 0.5,
        "{clamped} vs {as_of_now}: the grant bounds the answer"
    );
    server.stop().await;
}
