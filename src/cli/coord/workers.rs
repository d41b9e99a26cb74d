//! The workers: through permitd (AcquirePermit with `max_wait` -> call -> ReportOutcome), or
//! naive (call; on a 429 or no answer, full-jitter exponential backoff), and what they count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cli::rpc::Conn as Channel;
use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::cli::rpc;
use permitd::backoff;
use permitd::permits::resource::{BackoffDef, BackoffKind};
use permitd::proto::{self, permits_client::PermitsClient};
use permitd::server::convert::to_duration;

/// How long a worker waits before asking permitd again after a failed call (the server
/// restarting, say).
const RETRY_ON_ERROR: Duration = Duration::from_millis(50);

/// How the workers coordinate, and what permitd is told beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Through permitd, the upstream's exact limit configured; headers not learned from.
    Known,
    /// Through permitd, a guess 100x too high configured; learning from headers.
    High,
    /// Through permitd, a guess 10x too low configured; learning from headers.
    Low,
    /// Through permitd, no limit configured; learning from headers.
    Bare,
    /// No permitd: each worker alone backs off after a 429 (full jitter, 100 ms x2, cap 10 s).
    Naive,
}

impl Mode {
    /// Every mode, in the order runs take them by default.
    pub(super) const ALL: [Self; 5] = [Self::Known, Self::High, Self::Low, Self::Bare, Self::Naive];

    /// The flag's spelling.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Known => "known",
            Self::High => "high",
            Self::Low => "low",
            Self::Bare => "bare",
            Self::Naive => "naive",
        }
    }

    /// Whether the mode's result depends on the upstream's headers (learning modes).
    pub(super) fn reads_headers(self) -> bool {
        matches!(self, Self::High | Self::Low | Self::Bare)
    }
}

/// What a share of the workers did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Tally {
    /// Calls served (as the workers saw them).
    pub(crate) ok: u64,
    /// Calls refused with a 429 (as the workers saw them).
    pub(crate) limited: u64,
    /// Calls with no answer, and failed permitd calls.
    pub(crate) errors: u64,
    /// From the common start to the last worker's end.
    pub(crate) elapsed: Duration,
}

impl Tally {
    /// Add another share's counts; the longest elapsed wins.
    pub(super) fn add(&mut self, other: &Self) {
        self.ok += other.ok;
        self.limited += other.limited;
        self.errors += other.errors;
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// The one line a child process prints.
    pub(super) fn to_json(self) -> String {
        format!(
            "{{\"ok\":{},\"limited\":{},\"errors\":{},\"elapsed_s\":{:.6}}}",
            self.ok,
            self.limited,
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }

    /// Read [`Tally::to_json`]'s line back.
    pub(super) fn from_json(line: &str) -> Option<Self> {
        Some(Self {
            ok: json_field(line, "ok")?.parse().ok()?,
            limited: json_field(line, "limited")?.parse().ok()?,
            errors: json_field(line, "errors")?.parse().ok()?,
            elapsed: Duration::try_from_secs_f64(json_field(line, "elapsed_s")?.parse().ok()?)
                .ok()?,
        })
    }
}

/// The raw value of `"key":` in a flat JSON object of numbers.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line.get(at..)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
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

/// One share of the fleet: `workers` workers of one process.
#[derive(Debug, Clone)]
pub(super) struct Share {
    /// Workers in this process.
    pub(crate) workers: usize,
    /// The upstream's URL.
    pub(crate) url: String,
    /// permitd's channel and the resource (absent for naive).
    pub(crate) permitd: Option<(Channel, String)>,
    /// When every process starts.
    pub(crate) start: Instant,
    /// How long the workers run from `start`.
    pub(crate) duration: Duration,
    /// Extra time a permitd call may take beyond its wait.
    pub(crate) timeout: Duration,
    /// Distinguishes the workers' client ids between processes.
    pub(crate) tag: String,
}

/// Run the share's workers from its start to its end.
pub(super) async fn run(share: Share) -> Tally {
    let mut http = Client::builder(TokioExecutor::new());
    http.pool_max_idle_per_host(share.workers);
    let http: Http = http.build_http();
    tokio::time::sleep_until(share.start.into()).await;
    let end = share.start + share.duration;
    let mut tasks = Vec::with_capacity(share.workers);
    for w in 0..share.workers {
        let (http, url) = (http.clone(), share.url.clone());
        tasks.push(match &share.permitd {
            Some((channel, resource)) => tokio::spawn(through_permitd(
                PermitsClient::new(channel.clone()),
                http,
                url,
                resource.clone(),
                format!("bench-coord-{}-{w}", share.tag),
                end,
                share.timeout,
            )),
            None => tokio::spawn(naive(http, url, end)),
        });
    }
    let mut sum = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => sum.add(&t),
            Err(_) => sum.errors += 1,
        }
    }
    sum.elapsed = share.start.elapsed();
    sum
}

/// Sleep `d`, but not past `end`.
async fn sleep_within(d: Duration, end: Instant) {
    tokio::time::sleep(d.min(end.saturating_duration_since(Instant::now()))).await;
}

/// One worker through permitd: acquire (waiting up to the time left) -> call -> report,
/// until `end`. A denial sleeps its `retry_after`; a failed permitd call 50 ms.
async fn through_permitd(
    mut permits: PermitsClient<Channel>,
    http: Http,
    url: String,
    resource: String,
    client_id: String,
    end: Instant,
    timeout: Duration,
) -> Tally {
    let mut t = Tally::default();
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
            .acquire_permit(rpc::request(req, left + timeout))
            .await
        {
            Ok(g) => g.into_inner(),
            Err(_) => {
                t.errors += 1;
                sleep_within(RETRY_ON_ERROR, end).await;
                continue;
            }
        };
        if !g.granted {
            let wait = g
                .retry_after
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_millis(1));
            sleep_within(wait, end).await;
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
            .report_outcome(rpc::request(report, timeout))
            .await
            .is_err()
        {
            t.errors += 1;
        }
    }
    t
}

/// One worker on its own: call; after a 429 or no answer sleep the classic backoff (full
/// jitter, base 100 ms, x2, cap 10 s), ignoring the headers; until `end`.
async fn naive(http: Http, url: String, end: Instant) -> Tally {
    let policy = BackoffDef {
        kind: BackoffKind::FullJitter,
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
        multiplier: 2.0,
        ..BackoffDef::default()
    };
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
            sleep_within(backoff::delay(&policy, failures, &mut rng), end).await;
        } else {
            failures = 0;
        }
    }
    t
}

/// `workers` split over `processes` as evenly as possible (the first ones get one more).
pub(super) fn split(workers: usize, processes: usize) -> Vec<usize> {
    let processes = processes.max(1);
    (0..processes)
        .map(|i| workers / processes + usize::from(i < workers % processes))
        .collect()
}
