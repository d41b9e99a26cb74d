//! `permitd bench`: a load generator over real gRPC that measures `AcquirePermit` against
//! the floor, the server's own `grpc.health.v1.Health/Check` (the cost of a tonic round
//! trip), in one invocation and interleaved, so drift on a noisy machine hits every phase
//! alike.
//!
//! Phases: `health` (the floor), `grant` (immediately granted permits, never released:
//! leases expire), `deny` (a resource whose bucket is empty), `release` (acquire then
//! ReportOutcome, one cycle counted as one permit), `batch` (AcquirePermits calls of
//! `--batch` grants each; counted per permit, latency per call, compared with `grant`).
//! With `--buckets N` the permits spread over N partitions of a per-partition resource.
//! With `--server-pid` the server's CPU time per request is read from
//! `/proc/PID/task/*/schedstat` (nanoseconds, all threads), which is steadier than
//! throughput when the load generator is the bottleneck.
//!
//! `json` is `grant` over HTTP/JSON (Connect's unary POST on the same port, HTTP/1.1 with
//! keep-alive, one connection per worker as curl-like tools use it), compared with `grant`
//! (`json_vs_grant`). Plaintext without a token only.
//!
//! `health` is a floor that carries permitd's own overhead (its runtime, layers and
//! router). With `--floor-server` (and `--floor-pid`) a `floor` phase measures
//! `Health/Check` on a bare tonic server too (`cargo run --release --example floor`), in
//! the same rounds, and every phase is also given against it (`x_bare`, `cpu_x_bare`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::cli::rpc::Conn as Channel;
use anyhow::Context as _;

use super::ConnArgs;
use permitd::proto::{self, permits_client::PermitsClient, quotas_client::QuotasClient};

/// Flags of `permitd bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Where the server is.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// Requests in flight at once
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// HTTP/2 connections the requests are spread over
    #[arg(long, default_value_t = 8)]
    pub(crate) connections: usize,
    /// Measured time per phase (split into rounds that interleave the phases)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Rounds the phases are interleaved in
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
    /// Distinct buckets (partitions) the permits spread over, 1 to 1 000 000
    #[arg(long, default_value_t = 1)]
    pub(crate) buckets: u64,
    /// Phases to run, comma-separated: health, grant, deny, release, batch, json, rls
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "health,grant,deny,release"
    )]
    pub(crate) phases: Vec<Phase>,
    /// Permits per AcquirePermits call in the batch phase, 1 to 1000
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) batch: usize,
    /// The server's process id, to measure its CPU time per request
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,
    /// A bare gRPC server whose Health/Check is the true floor, measured in the same rounds
    /// (plaintext; `cargo run --release --example floor -- ADDR` is one)
    #[arg(long, value_name = "URL")]
    pub(crate) floor_server: Option<String>,
    /// The bare server's process id, to measure its CPU time per request
    #[arg(long, value_name = "PID", requires = "floor_server")]
    pub(crate) floor_pid: Option<u32>,
    /// Print only the JSON line
    #[arg(long)]
    pub(crate) json: bool,
}

/// One kind of request the bench sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Phase {
    /// grpc.health.v1.Health/Check: the floor.
    Health,
    /// AcquirePermit, granted at once.
    Grant,
    /// AcquirePermit, denied at once.
    Deny,
    /// AcquirePermit then ReportOutcome.
    Release,
    /// AcquirePermits of `--batch` permits, all granted at once; counted per permit.
    Batch,
    /// Envoy's ShouldRateLimit: domain `bench`, one descriptor `user` whose value cycles over
    /// `--buckets` values (the server needs `--rls-config` with that rule: scripts/bench.sh).
    Rls,
    /// grpc.health.v1.Health/Check on `--floor-server`: the true floor (added with it).
    Floor,
    /// AcquirePermit, granted at once, over HTTP/JSON (Connect) on the same port.
    Json,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Grant => "grant",
            Self::Deny => "deny",
            Self::Release => "release",
            Self::Batch => "batch",
            Self::Rls => "rls",
            Self::Floor => "floor",
            Self::Json => "json",
        }
    }
}

const GRANT: &str = "bench:grant";
const DENY: &str = "bench:deny";

/// What one phase measured over all rounds.
#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
    latencies_us: Vec<u32>,
}

/// Define the bench's resources: one that always grants and one that never does.
async fn setup(channel: Channel, buckets: u64) -> anyhow::Result<()> {
    let mut q = QuotasClient::new(channel.clone());
    let limit = |amount: u64, secs: i64| proto::Limit {
        dimension: "requests".into(),
        amount,
        period: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        burst: 0,
        scope: 0,
    };
    let lease = Some(prost_types::Duration {
        seconds: 5,
        nanos: 0,
    });
    for r in [
        proto::Resource {
            name: GRANT.into(),
            limits: vec![limit(1_000_000_000_000, 1)],
            per_partition: buckets > 1,
            lease,
            // The hot path without slow start: nothing reports outcomes here.
            limits_known: Some(true),
            ..Default::default()
        },
        proto::Resource {
            name: DENY.into(),
            limits: vec![limit(1, 366 * 24 * 3600)],
            limits_known: Some(true),
            ..Default::default()
        },
    ] {
        q.put_resource(proto::PutResourceRequest { resource: Some(r) })
            .await
            .context("defining the bench resources")?;
    }
    // Empty the deny bucket.
    PermitsClient::new(channel)
        .acquire_permit(proto::AcquirePermitRequest {
            resource: DENY.into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Sum of on-CPU nanoseconds of every thread of `pid`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(path).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// An HTTP/1.1 client for the `json` phase.
type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// The clients one worker calls through.
struct Clients {
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    permits: PermitsClient<Channel>,
    /// Its own HTTP/1.1 connection (a client per worker), and the method's URL.
    json: (Http, String),
    rls: permitd::proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient<Channel>,
}

async fn one(
    phase: Phase,
    c: &mut Clients,
    partition: String,
    batch: &proto::AcquirePermitsRequest,
) -> bool {
    let (health, permits) = (&mut c.health, &mut c.permits);
    match phase {
        Phase::Json => {
            use http_body_util::BodyExt as _;
            let body = format!("{{\"resource\":\"{GRANT}\",\"partition\":\"{partition}\"}}");
            let Ok(req) = hyper::Request::post(&c.json.1)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            else {
                return false;
            };
            let Ok(res) = c.json.0.request(req).await else {
                return false;
            };
            let ok = res.status() == hyper::StatusCode::OK;
            // Read like a client would, and check the grant without a JSON parser of its own.
            res.into_body()
                .collect()
                .await
                .is_ok_and(|b| ok && memchr_granted(&b.to_bytes()))
        }
        Phase::Rls => {
            use permitd::proto::envoy::extensions::common::ratelimit::v3::{
                RateLimitDescriptor, rate_limit_descriptor::Entry,
            };
            use permitd::proto::envoy::service::ratelimit::v3::RateLimitRequest;
            c.rls
                .should_rate_limit(RateLimitRequest {
                    domain: "bench".into(),
                    descriptors: vec![RateLimitDescriptor {
                        entries: vec![Entry {
                            key: "user".into(),
                            value: partition,
                        }],
                        ..Default::default()
                    }],
                    hits_addend: 0,
                })
                .await
                .is_ok_and(|r| r.get_ref().overall_code == 1)
        }
        Phase::Batch => permits.acquire_permits(batch.clone()).await.is_ok_and(|r| {
            let r = r.get_ref();
            r.results.len() == batch.requests.len()
                && r.results.iter().all(|x| {
                    matches!(
                        &x.result,
                        Some(proto::acquire_permit_result::Result::Response(a)) if a.granted
                    )
                })
        }),
        Phase::Health | Phase::Floor => health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok(),
        Phase::Grant | Phase::Deny => {
            let resource = if phase == Phase::Grant { GRANT } else { DENY };
            permits
                .acquire_permit(proto::AcquirePermitRequest {
                    resource: resource.into(),
                    partition,
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| r.get_ref().granted == (phase == Phase::Grant))
        }
        Phase::Release => {
            let Ok(r) = permits
                .acquire_permit(proto::AcquirePermitRequest {
                    resource: GRANT.into(),
                    partition,
                    ..Default::default()
                })
                .await
            else {
                return false;
            };
            permits
                .report_outcome(proto::ReportOutcomeRequest {
                    permit_id: r.into_inner().permit_id,
                    status_code: 200,
                    attempt: 1,
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    }
}

/// Whether a JSON answer says `"granted":true`.
fn memchr_granted(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"granted\":true";
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// The connections of the servers measured: permitd's, and the bare floor's if any.
struct Targets {
    permitd: Vec<Channel>,
    floor: Vec<Channel>,
}

/// Run one phase for `length` with `args.concurrency` workers.
async fn round(
    phase: Phase,
    targets: &Targets,
    args: &BenchArgs,
    length: Duration,
    t: &mut Totals,
) {
    let (channels, pid) = if phase == Phase::Floor {
        (&targets.floor, args.floor_pid)
    } else {
        (&targets.permitd, args.server_pid)
    };
    let cpu0 = pid.and_then(cpu_time);
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let ch = channels[w % channels.len()].clone();
        let buckets = args.buckets.max(1);
        let batch_size = if phase == Phase::Batch { args.batch } else { 0 };
        let mut next = u64::try_from(w).unwrap_or(0);
        let json_url = format!(
            "http://{}/permitd.v1.Permits/AcquirePermit",
            args.conn.server
        );
        tasks.push(tokio::spawn(async move {
            let mut clients = Clients {
                health: tonic_health::pb::health_client::HealthClient::new(ch.clone()),
                permits: PermitsClient::new(ch.clone()),
                json: (
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                        .build_http(),
                    json_url,
                ),
                rls: permitd::proto::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::new(ch),
            };
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            // Spread over the buckets with a stride, so every worker visits all of them.
            let mut partition = move || {
                next = next.wrapping_add(7919) % buckets;
                if buckets > 1 {
                    format!("p{next}")
                } else {
                    String::new()
                }
            };
            let mut batch = proto::AcquirePermitsRequest {
                requests: (0..batch_size)
                    .map(|_| proto::AcquirePermitRequest {
                        resource: GRANT.into(),
                        partition: partition(),
                        ..Default::default()
                    })
                    .collect(),
            };
            while Instant::now() < end {
                if buckets > 1 {
                    for r in &mut batch.requests {
                        r.partition = partition();
                    }
                }
                let t0 = Instant::now();
                let ok = one(phase, &mut clients, partition(), &batch).await;
                lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                errors += u64::from(!ok);
            }
            (lat, errors)
        }));
    }
    // A batch call counts as the permits it carries (its latency stays one call's).
    let per_call = if phase == Phase::Batch {
        u64::try_from(args.batch).unwrap_or(u64::MAX)
    } else {
        1
    };
    for task in tasks {
        if let Ok((lat, errors)) = task.await {
            t.requests += u64::try_from(lat.len())
                .unwrap_or(u64::MAX)
                .saturating_mul(per_call);
            t.latencies_us.extend(lat);
            t.errors += errors;
        }
    }
    t.elapsed += start.elapsed();
    if let (Some(a), Some(b)) = (cpu0, pid.and_then(cpu_time)) {
        t.cpu = Some(t.cpu.unwrap_or_default() + b.saturating_sub(a));
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Run the bench and print the table and the JSON line.
pub(super) async fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.buckets),
        "--buckets must be 1 to 1000000"
    );
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        (1..=permitd::server::batch::MAX_BATCH).contains(&args.batch),
        "--batch must be 1 to {}",
        permitd::server::batch::MAX_BATCH
    );
    anyhow::ensure!(
        !args.phases.contains(&Phase::Json)
            || (!args.conn.server.contains("://")
                && args.conn.token.is_none()
                && args.conn.tls_ca.is_none()),
        "the json phase needs a plaintext --server HOST:PORT without a token"
    );
    let mut phases = args.phases.clone();
    match &args.floor_server {
        Some(_) if !phases.contains(&Phase::Floor) => phases.insert(0, Phase::Floor),
        None if phases.contains(&Phase::Floor) => {
            anyhow::bail!("the floor phase needs --floor-server")
        }
        _ => {}
    }
    let mut targets = Targets {
        permitd: Vec::new(),
        floor: Vec::new(),
    };
    for _ in 0..args.connections {
        targets
            .permitd
            .push(super::rpc::connect(&args.conn, args.conn.timeout).await?);
    }
    if let Some(url) = &args.floor_server {
        // Plaintext and no token: nothing but a tonic round trip.
        let bare = ConnArgs {
            server: url.clone(),
            timeout: args.conn.timeout,
            token: None,
            tenant: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        };
        for _ in 0..args.connections {
            let c = super::rpc::connect(&bare, args.conn.timeout)
                .await
                .context("connecting to --floor-server")?;
            targets.floor.push(c);
        }
    }
    setup(targets.permitd[0].clone(), args.buckets).await?;
    let slice = args.duration / args.rounds;
    let mut totals: Vec<(Phase, Totals)> = phases.iter().map(|&p| (p, Totals::default())).collect();
    // Warm-up: connections, the server's buckets and allocator.
    for (p, _) in &totals {
        round(
            *p,
            &targets,
            &args,
            slice.min(Duration::from_millis(500)),
            &mut Totals::default(),
        )
        .await;
    }
    for _ in 0..args.rounds {
        for (p, t) in &mut totals {
            round(*p, &targets, &args, slice, t).await;
        }
    }
    report(&args, &mut totals);
    Ok(std::process::ExitCode::SUCCESS)
}

#[allow(clippy::cast_precision_loss)]
fn report(args: &BenchArgs, totals: &mut [(Phase, Totals)]) {
    let rate = |t: &Totals| t.requests as f64 / t.elapsed.as_secs_f64().max(1e-9);
    let cpu_us = |t: &Totals| {
        t.cpu
            .map(|c| c.as_secs_f64() * 1e6 / (t.requests.max(1) as f64))
    };
    let floor_of = |phase: Phase| {
        totals
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, t)| (rate(t), cpu_us(t)))
    };
    let (floor, bare) = (floor_of(Phase::Health), floor_of(Phase::Floor));
    // Throughput and CPU per request of a phase against a floor.
    let against = |r: f64, c: Option<f64>, f: Option<(f64, Option<f64>)>| {
        let x = f.map_or(f64::NAN, |(f, _)| r / f);
        let cx = match (c, f.and_then(|(_, fc)| fc)) {
            (Some(c), Some(f)) => c / f,
            _ => f64::NAN,
        };
        (x, cx)
    };
    let mut table = format!(
        "{:<8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>11} {:>9}",
        "phase",
        "req/s",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "errors",
        "x_floor",
        "cpu_us/req",
        "cpu_x"
    );
    if bare.is_some() {
        let _ = write!(table, " {:>8} {:>10}", "x_bare", "cpu_x_bare");
    }
    table.push('\n');
    let mut json = format!(
        "{{\"concurrency\":{},\"connections\":{},\"buckets\":{},\"phases\":{{",
        args.concurrency, args.connections, args.buckets
    );
    for (i, (p, t)) in totals.iter_mut().enumerate() {
        t.latencies_us.sort_unstable();
        let l = &t.latencies_us;
        let r = rate(t);
        let c = cpu_us(t);
        let (x, cx) = against(r, c, floor);
        let (xb, cxb) = against(r, c, bare);
        let c_text = c.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        let _ = write!(
            table,
            "{:<8} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8.2} {:>11} {:>9.2}",
            p.name(),
            r,
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99),
            pct(l, 0.999),
            t.errors,
            x,
            c_text,
            cx
        );
        if bare.is_some() {
            let _ = write!(table, " {xb:>8.2} {cxb:>10.2}");
        }
        table.push('\n');
        let _ = write!(
            json,
            "{}\"{}\":{{\"rps\":{r:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"errors\":{},\"ratio_rps\":{},\"cpu_us_per_req\":{},\"ratio_cpu\":{},\"ratio_rps_bare\":{},\"ratio_cpu_bare\":{}}}",
            if i > 0 { "," } else { "" },
            p.name(),
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99),
            pct(l, 0.999),
            t.errors,
            num(x),
            c.map_or_else(|| "null".to_owned(), |c| format!("{c:.2}")),
            num(cx),
            num(xb),
            num(cxb),
        );
    }
    json.push('}');
    // The batch form against the unary one, both in permits per second.
    let of = |phase: Phase| totals.iter().find(|(p, _)| *p == phase).map(|(_, t)| t);
    if let Some(b) = of(Phase::Batch) {
        let vs = of(Phase::Grant).map_or(f64::NAN, |g| rate(b) / rate(g).max(1e-9));
        let cpu_vs = match (cpu_us(b), of(Phase::Grant).and_then(cpu_us)) {
            (Some(b), Some(g)) => g / b.max(1e-9),
            _ => f64::NAN,
        };
        let _ = writeln!(
            table,
            "batch: {} permits per AcquirePermits call (req/s and cpu_us/req count permits, \
             latency is per call): {:.2} x grant's permits/s, {:.2} x less server CPU per permit",
            args.batch, vs, cpu_vs
        );
        let _ = write!(
            json,
            ",\"batch_size\":{},\"batch_vs_grant_rps\":{},\"batch_vs_grant_cpu\":{}",
            args.batch,
            num(vs),
            num(cpu_vs)
        );
    }
    if let (Some(j), Some(g)) = (of(Phase::Json), of(Phase::Grant)) {
        let vs = rate(j) / rate(g).max(1e-9);
        let cpu_vs = match (cpu_us(j), cpu_us(g)) {
            (Some(j), Some(g)) => j / g.max(1e-9),
            _ => f64::NAN,
        };
        let _ = writeln!(
            table,
            "json: AcquirePermit over HTTP/JSON (HTTP/1.1, a connection per worker): {vs:.2} x \
             grant's permits/s, {cpu_vs:.2} x its server CPU per permit"
        );
        let _ = write!(
            json,
            ",\"json_vs_grant_rps\":{},\"json_vs_grant_cpu\":{}",
            num(vs),
            num(cpu_vs)
        );
    }
    json.push('}');
    // Written, not printed: a reader that closed the pipe (`| head`) must not panic it.
    let mut out = std::io::stdout().lock();
    if !args.json {
        let _ = out.write_all(table.as_bytes());
    }
    let _ = writeln!(out, "{json}");
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".to_owned()
    }
}
