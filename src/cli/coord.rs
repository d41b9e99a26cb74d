//! `permitd bench-coord`: how well workers that share one upstream use its limit, with
//! permitd coordinating them and without.
//!
//! The command starts its own HTTP upstream (axum on 127.0.0.1:0) that enforces a token
//! bucket of `--limit` per `--period` (burst `--limit`) and answers every call with rate-limit
//! headers (IETF `RateLimit-Policy`/`RateLimit` or OpenAI `x-ratelimit-*-requests`), and a
//! 429 with `Retry-After` (whole seconds) when the bucket is empty. Like real upstreams it
//! tolerates `--slack` units beyond its limit (clock jitter between a grant and the call's
//! arrival) without showing them in its headers. Then `--workers` workers call it for
//! `--duration` in each mode, one mode after the other, each against a fresh upstream:
//!
//! - `known`: through permitd with the upstream's limit configured on the resource
//!   (AcquirePermit with `max_wait` -> call -> ReportOutcome; headers not learned from: the
//!   configured limit is the truth);
//! - `known-learn` (not run by default): the same with header learning on, the resource
//!   default, so the headers' `remaining` and reset apply on top of the configured limit;
//! - `learned`: through permitd with no limit configured: permitd learns it from the
//!   headers the workers report;
//! - `naive`: no permitd; each worker alone retries a 429 after the classic exponential
//!   backoff (base 100 ms, x2, cap 10 s, full jitter) and ignores the headers.
//!
//! Reported per mode: the upstream's useful throughput as a share of its limit (successful
//! calls / (burst + rate x elapsed)), the 429s and their rate, as a table and one JSON line.
//!
//! Headers: IETF states the window (`RateLimit-Policy: "default";q=50;w=1`) and the reset in
//! whole seconds; OpenAI's headers state no window (its limits are per minute), so in that
//! dialect the upstream states its limit per minute (`--limit` x 60 s / `--period`), its
//! remaining units and the time until its bucket is whole again (`20ms`, `1s`). Both say
//! the reset as the time until the quota is whole again, as OpenAI and Anthropic document
//! it for their token buckets.

// The upstream does its bucket math in floats, as simple upstreams do.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::transport::Channel;

use super::ConnArgs;
use crate::backoff;
use crate::permits::resource::{BackoffDef, BackoffKind};
use crate::proto::{self, permits_client::PermitsClient, quotas_client::QuotasClient};
use crate::server::convert::to_duration;

/// Flags of `permitd bench-coord`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordArgs {
    /// Where the server is (for the known and learned modes).
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Workers calling the upstream at once
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// How long each mode runs
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The upstream's limit: calls per --period (also its burst)
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// The upstream's period (whole seconds, as the headers say it)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub period: Duration,
    /// Units the upstream tolerates beyond its limit (hidden from its headers)
    #[arg(long, default_value_t = 1)]
    pub slack: u64,
    /// The upstream's rate-limit headers
    #[arg(long, value_enum, default_value = "ietf")]
    pub dialect: Dialect,
    /// Modes to run, comma-separated: known, known-learn, learned, naive
    #[arg(long, value_delimiter = ',', default_value = "known,learned,naive")]
    pub modes: Vec<Mode>,
    /// Print only the JSON line
    #[arg(long)]
    pub json: bool,
}

/// How the workers coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Through permitd, the upstream's limit configured.
    Known,
    /// Through permitd, the limit configured and headers learned from as well.
    KnownLearn,
    /// Through permitd, the limit learned from the upstream's headers.
    Learned,
    /// No permitd: each worker backs off on its own.
    Naive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Known => "known",
            Self::KnownLearn => "known-learn",
            Self::Learned => "learned",
            Self::Naive => "naive",
        }
    }
}

/// The rate-limit headers the upstream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// IETF `RateLimit-Policy` / `RateLimit` structured fields.
    Ietf,
    /// OpenAI's `x-ratelimit-{limit,remaining,reset}-requests`.
    Openai,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Self::Ietf => "ietf",
            Self::Openai => "openai",
        }
    }
}

/// The simulated upstream: a token bucket with a hidden tolerance of `slack` units.
#[derive(Debug)]
struct Upstream {
    dialect: Dialect,
    amount: f64,
    period: Duration,
    slack: f64,
    /// (units available, when last refilled).
    bucket: Mutex<(f64, Instant)>,
    ok: AtomicU64,
    limited: AtomicU64,
}

/// What one call to the upstream found.
struct Take {
    allowed: bool,
    /// Units left as the headers show them (the tolerance hidden).
    remaining: u64,
    /// Seconds until one more unit.
    until_one: f64,
    /// Seconds until the shown quota is whole again.
    until_full: f64,
}

impl Upstream {
    fn new(args: &CoordArgs) -> Arc<Self> {
        let amount = args.limit as f64;
        let slack = args.slack as f64;
        Arc::new(Self {
            dialect: args.dialect,
            amount,
            period: args.period,
            slack,
            bucket: Mutex::new((amount + slack, Instant::now())),
            ok: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        })
    }

    fn rate(&self) -> f64 {
        self.amount / self.period.as_secs_f64()
    }

    fn take(&self) -> Take {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let rate = self.rate();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(self.amount + self.slack);
        b.1 = now;
        let allowed = b.0 >= 1.0;
        if allowed {
            b.0 -= 1.0;
        }
        let shown = (b.0 - self.slack).max(0.0);
        Take {
            allowed,
            remaining: shown.floor() as u64,
            until_one: if b.0 >= 1.0 { 0.0 } else { (1.0 - b.0) / rate },
            until_full: (self.amount - shown) / rate,
        }
    }

    fn headers(&self, t: &Take, h: &mut HeaderMap) {
        let amount = self.amount as u64;
        let mut set = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        match self.dialect {
            Dialect::Openai => {
                let per_minute = self.amount * 60.0 / self.period.as_secs_f64();
                set(
                    "x-ratelimit-limit-requests",
                    (per_minute.round() as u64).to_string(),
                );
                set("x-ratelimit-remaining-requests", t.remaining.to_string());
                set(
                    "x-ratelimit-reset-requests",
                    format!("{}ms", (t.until_full * 1000.0).ceil()),
                );
            }
            Dialect::Ietf => {
                set(
                    "ratelimit-policy",
                    format!("\"default\";q={amount};w={}", self.period.as_secs().max(1)),
                );
                set(
                    "ratelimit",
                    format!("\"default\";r={};t={}", t.remaining, t.until_full.ceil()),
                );
            }
        }
    }
}

async fn handle(State(up): State<Arc<Upstream>>) -> (StatusCode, HeaderMap) {
    let mut h = HeaderMap::new();
    let t = up.take();
    let status = if t.allowed {
        up.ok.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    } else {
        up.limited.fetch_add(1, Ordering::Relaxed);
        let secs = t.until_one.ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert("retry-after", v);
        }
        StatusCode::TOO_MANY_REQUESTS
    };
    up.headers(&t, &mut h);
    (status, h)
}

/// Serve `up` on 127.0.0.1:0; returns its URL and the server task.
async fn start_upstream(
    up: Arc<Upstream>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the upstream on 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/call", get(handle)).with_state(up);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("upstream stopped: {e}");
        }
    });
    Ok((format!("http://{addr}/call"), task))
}

type Http = Client<HttpConnector, Body>;

/// Call the upstream: (status, headers); status 0 when there was no answer.
async fn call(http: &Http, url: &str) -> (u16, HashMap<String, String>) {
    let Ok(req) = axum::http::Request::get(url).body(Body::empty()) else {
        return (0, HashMap::new());
    };
    match http.request(req).await {
        Ok(resp) => {
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            (resp.status().as_u16(), headers)
        }
        Err(_) => (0, HashMap::new()),
    }
}

/// What one mode did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Calls that reached the upstream and were served.
    ok: u64,
    /// Calls the upstream refused with a 429.
    limited: u64,
    /// Calls with no answer, and failed permitd calls.
    errors: u64,
    /// From the first call to the last answer.
    elapsed: Duration,
}

impl Tally {
    fn calls(&self) -> u64 {
        self.ok + self.limited
    }
    fn rate_429(&self) -> f64 {
        self.limited as f64 / self.calls().max(1) as f64
    }
    /// Successful calls / what the upstream could serve over the run.
    fn share(&self, args: &CoordArgs) -> f64 {
        let rate = args.limit as f64 / args.period.as_secs_f64();
        let capacity = args.limit as f64 + rate * self.elapsed.as_secs_f64();
        self.ok as f64 / capacity
    }
    /// Whether the target for the mode is met (`None`: the baseline has none).
    fn target_met(&self, mode: Mode, args: &CoordArgs) -> Option<bool> {
        match mode {
            Mode::Known | Mode::KnownLearn => Some(self.share(args) >= 0.98 && self.limited == 0),
            Mode::Learned => Some(self.share(args) >= 0.95 && self.rate_429() < 0.01),
            Mode::Naive => None,
        }
    }
}

/// Define the mode's resource on the server: the upstream's limit for `known`, nothing for
/// `learned` (learned from headers). A unique name, so runs never share state.
async fn define(channel: Channel, mode: Mode, args: &CoordArgs) -> anyhow::Result<String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let name = format!("bench-coord:{}:{}-{stamp}", mode.name(), std::process::id());
    let limits = if matches!(mode, Mode::Known | Mode::KnownLearn) {
        vec![proto::Limit {
            dimension: "requests".into(),
            amount: args.limit,
            period: Some(to_duration(args.period)),
            burst: 0,
            scope: 0,
        }]
    } else {
        Vec::new()
    };
    QuotasClient::new(channel)
        .put_resource(proto::PutResourceRequest {
            resource: Some(proto::Resource {
                name: name.clone(),
                limits,
                learn_from_headers: Some(mode != Mode::Known),
                ..Default::default()
            }),
        })
        .await
        .map_err(super::rpc::RpcError::from)
        .context("defining the bench resource")?;
    Ok(name)
}

/// Workers through permitd: acquire (waiting) -> call -> report, until `end`.
async fn through_permitd(
    channel: &Channel,
    http: &Http,
    url: &str,
    resource: &str,
    args: &CoordArgs,
) -> Tally {
    let start = Instant::now();
    let end = start + args.duration;
    let mut tasks = Vec::with_capacity(args.workers);
    for w in 0..args.workers {
        let mut permits = PermitsClient::new(channel.clone());
        let (http, url, resource) = (http.clone(), url.to_owned(), resource.to_owned());
        let timeout = args.conn.timeout;
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let client_id = format!("bench-coord-{w}");
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(1) {
                    break;
                }
                let req = proto::AcquirePermitRequest {
                    resource: resource.clone(),
                    max_wait: Some(to_duration(left)),
                    client_id: client_id.clone(),
                    ..Default::default()
                };
                let g = match permits
                    .acquire_permit(super::rpc::request(req, left + timeout))
                    .await
                {
                    Ok(g) => g.into_inner(),
                    Err(_) => {
                        t.errors += 1;
                        break;
                    }
                };
                if !g.granted {
                    let wait = g
                        .retry_after
                        .and_then(|d| Duration::try_from(d).ok())
                        .unwrap_or(Duration::from_millis(1));
                    tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now())))
                        .await;
                    continue;
                }
                let (status, headers) = call(&http, &url).await;
                match status {
                    0 => t.errors += 1,
                    429 => t.limited += 1,
                    _ => t.ok += 1,
                }
                let report = proto::ReportOutcomeRequest {
                    permit_id: g.permit_id,
                    status_code: u32::from(status),
                    headers,
                    attempt: 1,
                    ..Default::default()
                };
                if permits
                    .report_outcome(super::rpc::request(report, timeout))
                    .await
                    .is_err()
                {
                    t.errors += 1;
                }
            }
            t
        }));
    }
    collect(tasks, start).await
}

/// Workers on their own: call; on a 429 sleep the classic backoff; until `end`.
async fn naive(http: &Http, url: &str, args: &CoordArgs) -> Tally {
    let policy = BackoffDef {
        kind: BackoffKind::FullJitter,
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
        multiplier: 2.0,
        ..BackoffDef::default()
    };
    let start = Instant::now();
    let end = start + args.duration;
    let mut tasks = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        let (http, url, policy) = (http.clone(), url.to_owned(), policy.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut rng = fastrand::Rng::new();
            let mut failures = 0u32;
            while Instant::now() < end {
                let (status, _) = call(&http, &url).await;
                match status {
                    0 => t.errors += 1,
                    429 => t.limited += 1,
                    _ => t.ok += 1,
                }
                if status == 429 || status == 0 {
                    failures = failures.saturating_add(1);
                    let wait = backoff::delay(&policy, failures, &mut rng);
                    tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now())))
                        .await;
                } else {
                    failures = 0;
                }
            }
            t
        }));
    }
    collect(tasks, start).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Tally>>, start: Instant) -> Tally {
    let mut sum = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => {
                sum.ok += t.ok;
                sum.limited += t.limited;
                sum.errors += t.errors;
            }
            Err(_) => sum.errors += 1,
        }
    }
    sum.elapsed = start.elapsed();
    sum
}

/// Run every mode and print the table and the JSON line.
pub(super) async fn run(args: CoordArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.limit >= 1, "--limit must be at least 1");
    anyhow::ensure!(
        args.period >= Duration::from_secs(1) && args.period.subsec_nanos() == 0,
        "--period must be whole seconds (the headers say it in seconds)"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be above zero");
    let needs_server = args.modes.iter().any(|&m| m != Mode::Naive);
    let channel = if needs_server {
        Some(super::rpc::connect(&args.conn, args.duration + args.conn.timeout).await?)
    } else {
        None
    };
    let mut http = Client::builder(TokioExecutor::new());
    http.pool_max_idle_per_host(args.workers);
    let http: Http = http.build_http();
    let mut results = Vec::new();
    for &mode in &args.modes {
        let up = Upstream::new(&args);
        let (url, server) = start_upstream(Arc::clone(&up)).await?;
        let tally = match (mode, &channel) {
            (Mode::Naive, _) => naive(&http, &url, &args).await,
            (_, Some(channel)) => {
                let resource = define(channel.clone(), mode, &args).await?;
                let t = through_permitd(channel, &http, &url, &resource, &args).await;
                // Best effort: the resource only mattered for this run.
                let _ = QuotasClient::new(channel.clone())
                    .delete_resource(proto::DeleteResourceRequest { name: resource })
                    .await;
                t
            }
            (_, None) => anyhow::bail!("no server connection"),
        };
        server.abort();
        // The upstream's own count is the truth; the workers' errors come from their side.
        let tally = Tally {
            ok: up.ok.load(Ordering::Relaxed),
            limited: up.limited.load(Ordering::Relaxed),
            ..tally
        };
        results.push((mode, tally));
    }
    report(&args, &results);
    Ok(std::process::ExitCode::SUCCESS)
}

fn report(args: &CoordArgs, results: &[(Mode, Tally)]) {
    let mut table = format!(
        "upstream: {} per {} (burst {}, tolerance {}), {} headers; {} workers, {} per mode\n\
         share = successful calls / (burst + rate x elapsed)\n\
         {:<11} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>7}\n",
        args.limit,
        humantime::format_duration(args.period),
        args.limit,
        args.slack,
        args.dialect.name(),
        args.workers,
        humantime::format_duration(args.duration),
        "mode",
        "calls",
        "ok",
        "429",
        "429_rate",
        "share",
        "errors",
        "elapsed",
        "target",
    );
    let mut json = format!(
        "{{\"workers\":{},\"limit\":{},\"period_s\":{},\"slack\":{},\"dialect\":\"{}\",\"duration_s\":{:.3},\"modes\":{{",
        args.workers,
        args.limit,
        args.period.as_secs(),
        args.slack,
        args.dialect.name(),
        args.duration.as_secs_f64()
    );
    for (i, (mode, t)) in results.iter().enumerate() {
        let target = t.target_met(*mode, args);
        let _ = writeln!(
            table,
            "{:<11} {:>8} {:>8} {:>8} {:>8.2}% {:>7.1}% {:>7} {:>8.2}s {:>7}",
            mode.name(),
            t.calls(),
            t.ok,
            t.limited,
            t.rate_429() * 100.0,
            t.share(args) * 100.0,
            t.errors,
            t.elapsed.as_secs_f64(),
            match target {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            }
        );
        let _ = write!(
            json,
            "{}\"{}\":{{\"calls\":{},\"ok\":{},\"upstream_429\":{},\"rate_429\":{:.4},\"share\":{:.4},\"errors\":{},\"elapsed_s\":{:.3},\"target_met\":{}}}",
            if i > 0 { "," } else { "" },
            mode.name(),
            t.calls(),
            t.ok,
            t.limited,
            t.rate_429(),
            t.share(args),
            t.errors,
            t.elapsed.as_secs_f64(),
            target.map_or("null", |m| if m { "true" } else { "false" }),
        );
    }
    json.push_str("}}");
    if !args.json {
        print!("{table}");
    }
    println!("{json}");
}
