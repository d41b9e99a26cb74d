//! No over-grant under concurrency: 64 clients against the real server for 30 periods.
//!
//! Grant instants come from the server itself (`lease_expires_at - lease`, nanosecond
//! precision), so the check is exact: for every pair of grants i <= j,
//! `j - i + 1 <= burst + (t_j - t_i) * amount / period` (the token-bucket envelope). Half
//! the clients queue (`max_wait`), half ask at once and honour `retry_after`, so both paths
//! race each other.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use permitd::proto;
use permitd::proto::permits_client::PermitsClient;
use tonic::transport::Channel;

use crate::support::{self, TestServer, acquire_req, dur, from_dur, from_ts, limit, put, resource};

const CLIENTS: usize = 64;
const CONNECTIONS: usize = 8;
const LEASE: Duration = Duration::from_secs(60);

pub struct Run {
    pub grants: Vec<u128>,
    pub denials: u64,
    /// Round trips of the clients that ask at once (no queueing in the figure).
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub max_overlap: usize,
}

/// Drive `CLIENTS` workers for `length`; each holds a granted permit for `hold` (simulated
/// upstream call) before releasing it.
async fn drive(server: &TestServer, name: &str, length: Duration, hold: Duration) -> Run {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(server.permits().await);
    }
    drive_clients(&clients, name, length, hold).await
}

/// [`drive`] over given connections (client `c` uses `clients[c % len]`): the cluster tests
/// spread the same load over several replicas.
pub async fn drive_clients(
    clients: &[PermitsClient<Channel>],
    name: &str,
    length: Duration,
    hold: Duration,
) -> Run {
    let grants = Arc::new(Mutex::new(Vec::new()));
    let held = Arc::new(Mutex::new(Vec::new()));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let denials = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = clients[c % clients.len()].clone();
        let (grants, held, lat, denials) =
            (grants.clone(), held.clone(), lat.clone(), denials.clone());
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let queued = c % 2 == 0;
            while Instant::now() < end {
                let left = end.saturating_duration_since(Instant::now());
                let mut req = acquire_req(&name);
                req.lease = Some(dur(LEASE));
                req.client_id = format!("load-{c}");
                if queued {
                    req.max_wait = Some(dur(left.min(Duration::from_millis(500))));
                }
                let t = Instant::now();
                let r = client
                    .acquire_permit(req)
                    .await
                    .expect("acquire")
                    .into_inner();
                if !queued {
                    lat.lock().unwrap().push(t.elapsed());
                }
                if r.granted {
                    let expires = from_ts(r.lease_expires_at.as_ref().unwrap());
                    let at = (expires - LEASE)
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap();
                    grants.lock().unwrap().push(at.as_nanos());
                    let got = Instant::now();
                    if !hold.is_zero() {
                        tokio::time::sleep(hold).await;
                    }
                    let released = Instant::now();
                    held.lock().unwrap().push((got, released));
                    client
                        .release_permit(proto::ReleasePermitRequest {
                            permit_id: r.permit_id,
                            refund: false,
                        })
                        .await
                        .expect("release");
                } else {
                    denials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !queued {
                        // A well-behaved worker comes back when told to.
                        let wait = from_dur(r.retry_after.as_ref().unwrap());
                        assert!(!wait.is_zero(), "a denial must carry a retry_after");
                        tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now())))
                            .await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let mut grants = Arc::try_unwrap(grants).unwrap().into_inner().unwrap();
    grants.sort_unstable();
    let mut latencies = Arc::try_unwrap(lat).unwrap().into_inner().unwrap();
    latencies.sort_unstable();
    let held = Arc::try_unwrap(held).unwrap().into_inner().unwrap();
    Run {
        grants,
        denials: denials.load(std::sync::atomic::Ordering::Relaxed),
        latencies,
        elapsed,
        max_overlap: max_overlap(&held),
    }
}

/// Largest number of intervals open at once (client-side timestamps: each interval lies
/// inside the server's real holding interval, so this never overstates).
fn max_overlap(held: &[(Instant, Instant)]) -> usize {
    let mut ev: Vec<(Instant, i32)> = held.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    // Ends before starts at the same instant.
    ev.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    usize::try_from(max).unwrap()
}

/// (pairs violating the envelope, worst count in any window of one period).
pub fn envelope(grants: &[u128], amount: u64, period: Duration, burst: u64) -> (usize, usize) {
    let p = period.as_nanos();
    let mut violations = 0;
    let mut worst = 0;
    let mut lo = 0;
    for j in 0..grants.len() {
        while grants[j] - grants[lo] >= p {
            lo += 1;
        }
        worst = worst.max(j - lo + 1);
        for i in 0..=j {
            let n = (j - i + 1) as u128;
            if n * p > u128::from(burst) * p + (grants[j] - grants[i]) * u128::from(amount) {
                violations += 1;
                break;
            }
        }
    }
    (violations, worst)
}

pub fn utilisation(
    grants: usize,
    amount: u64,
    period: Duration,
    burst: u64,
    elapsed: Duration,
) -> f64 {
    let allowed = burst as f64 + amount as f64 * elapsed.as_secs_f64() / period.as_secs_f64();
    grants as f64 / allowed
}

/// 64 concurrent clients, one limit of 20 per 100 ms, 30 periods: 0 grants outside the
/// token-bucket envelope, utilisation >= 0.95.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_over_grant_single_limit() {
    let server = TestServer::start().await;
    let (amount, period, burst) = (20, Duration::from_millis(100), 20);
    put(
        &server,
        resource(
            "load:one",
            vec![limit("requests", amount, period, burst)],
            0,
        ),
    )
    .await;
    let run = drive(&server, "load:one", period * 30, Duration::ZERO).await;
    let (violations, worst) = envelope(&run.grants, amount, period, burst);
    let util = utilisation(run.grants.len(), amount, period, burst, run.elapsed);
    println!(
        "RESULT no_over_grant limit={amount}/{}ms burst={burst} clients={CLIENTS} periods=30 grants={} denials={} windows_over_limit={violations} worst_window={worst} bound={} utilisation={util:.3} immediate_p50_us={} immediate_p99_us={}",
        period.as_millis(),
        run.grants.len(),
        run.denials,
        burst + amount,
        support::pct(&run.latencies, 0.5).as_micros(),
        support::pct(&run.latencies, 0.99).as_micros(),
    );
    assert_eq!(violations, 0, "grants outside the envelope");
    assert!(util >= 0.95, "utilisation {util}");
    server.stop().await;
}

/// Two limits on one resource (10 per 100 ms and 120 per 3 s): both envelopes hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_over_grant_two_limits() {
    let server = TestServer::start().await;
    let short = (10, Duration::from_millis(100), 10);
    let long = (120, Duration::from_secs(3), 120);
    put(
        &server,
        resource(
            "load:two",
            vec![
                limit("requests", short.0, short.1, short.2),
                limit("requests", long.0, long.1, long.2),
            ],
            0,
        ),
    )
    .await;
    let run = drive(&server, "load:two", short.1 * 30, Duration::ZERO).await;
    let (v1, w1) = envelope(&run.grants, short.0, short.1, short.2);
    let (v2, w2) = envelope(&run.grants, long.0, long.1, long.2);
    // Over 3 s the long limit binds: 120 burst (+ 40 refill at most over the run).
    let util = utilisation(run.grants.len(), long.0, long.1, long.2, run.elapsed);
    println!(
        "RESULT no_over_grant_two_limits limits=10/100ms,120/3s clients={CLIENTS} grants={} windows_over_limit={} worst_window_short={w1} worst_window_long={w2} utilisation_long={util:.3} immediate_p99_us={}",
        run.grants.len(),
        v1 + v2,
        support::pct(&run.latencies, 0.99).as_micros(),
    );
    assert_eq!(v1, 0, "short limit envelope");
    assert_eq!(v2, 0, "long limit envelope");
    assert!(util >= 0.95, "utilisation {util}");
    server.stop().await;
}

/// A concurrency limit of 4 with 64 clients holding permits for 2 ms: never more than 4
/// held at once (client-side timestamps), while the rate limit still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_over_grant_concurrency() {
    let server = TestServer::start().await;
    let (amount, period, burst) = (200, Duration::from_millis(100), 200);
    put(
        &server,
        resource(
            "load:conc",
            vec![limit("requests", amount, period, burst)],
            4,
        ),
    )
    .await;
    let run = drive(&server, "load:conc", period * 30, Duration::from_millis(2)).await;
    let (violations, _) = envelope(&run.grants, amount, period, burst);
    println!(
        "RESULT no_over_grant_concurrency concurrency=4 clients={CLIENTS} grants={} max_overlap={} windows_over_limit={violations} immediate_p99_us={}",
        run.grants.len(),
        run.max_overlap,
        support::pct(&run.latencies, 0.99).as_micros(),
    );
    assert!(run.max_overlap <= 4, "overlap {}", run.max_overlap);
    assert!(
        run.max_overlap >= 2,
        "the test must actually run permits concurrently"
    );
    assert_eq!(violations, 0);
    server.stop().await;
}
