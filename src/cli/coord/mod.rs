//! `permitd bench-coord`: how well workers that share one upstream use its limit, with
//! permitd coordinating them and without, for every shape of upstream.
//!
//! The command starts its own HTTP upstream (axum on 127.0.0.1:0, see [`upstream`]): a
//! token bucket of `--rate` units/s holding at most `--burst` units, that tolerates
//! `--slack` units more without showing them (clock jitter between a grant and the call's
//! arrival), states its bucket in one `--dialect` of rate-limit headers (IETF, OpenAI,
//! Anthropic, GitHub, classic `X-RateLimit-*`, or none at all), and answers 429 with
//! `Retry-After` when it is empty. Then `--workers` workers call it for `--duration` in each
//! mode (see [`workers::Mode`]): `known` (through permitd, the exact limit configured),
//! `high` (a guess 100x too high, learning from headers), `low` (10x too low, learning),
//! `bare` (no limit, learning) and `naive` (no permitd, exponential backoff after a 429).
//! Each mode gets a fresh upstream and a fresh, uniquely named resource: a cold start.
//!
//! `--processes N` splits the fleet over N OS processes: the command runs its own binary
//! again N-1 times with hidden `--child-*` flags; every child runs its share of the workers
//! from a common start instant against the same upstream and server, over its own gRPC
//! channel, and prints one JSON tally line that the parent adds up.
//!
//! `--spawn-server BIN` starts permitd itself on a free loopback port with a temporary data
//! directory; with `--restart-at D` it SIGTERMs it D into each run and starts it again on
//! the same port and directory (workers retry failed calls every 50 ms meanwhile).
//!
//! `--matrix` takes lists (`--rates 1,3,10 --bursts 1,rate,10rate --dialects ...
//! --workers 8,50 --processes 1,3 --modes ...`) and runs every cell, `--parallel` at once,
//! each with its own upstream, resource and channel; see [`matrix`] for the cells, their
//! targets and the report. Both forms print a table and one JSON line per cell.

// The upstream and the figures are float math, as simple upstreams do.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

mod matrix;
mod server;
mod upstream;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::cli::rpc::Conn as Channel;
use anyhow::Context as _;

use super::ConnArgs;
use matrix::{BurstSpec, Cell, Lists, Outcome};
use permitd::proto::{self, quotas_client::QuotasClient};
use permitd::server::convert::to_duration;
use upstream::Dialect;
use workers::Mode;
use workers::{Share, Tally};

/// How far ahead the start instant is set when child processes must start first.
const CHILD_LEAD: Duration = Duration::from_secs(2);

/// Flags of `permitd bench-coord`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CoordArgs {
    /// Where the server is (for every mode but naive), unless --spawn-server
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// Run every combination of the lists given (rates x bursts x dialects x workers x
    /// processes x modes), --parallel cells at once
    #[arg(long)]
    pub(crate) matrix: bool,
    /// The upstream's rate in units per second (fractions allowed: 0.5) [default: 50;
    /// --matrix: 1,3,10,50]
    #[arg(
        long = "rate",
        visible_alias = "rates",
        value_name = "N[,N...]",
        value_delimiter = ','
    )]
    pub(crate) rates: Vec<f64>,
    /// The upstream's capacity: N units, `rate` (the rate rounded up) or Krate (K x rate,
    /// rounded up) [default: rate; --matrix: 1,rate,10rate]
    #[arg(long = "burst", visible_alias = "bursts", value_name = "B[,B...]", value_delimiter = ',', value_parser = matrix::parse_burst)]
    pub(crate) bursts: Vec<BurstSpec>,
    /// Units the upstream tolerates beyond its capacity (hidden from its headers)
    #[arg(long, default_value_t = 1)]
    pub(crate) slack: u64,
    /// The upstream's rate-limit headers [default: ietf; --matrix: all six]
    #[arg(
        long = "dialect",
        visible_alias = "dialects",
        value_name = "D[,D...]",
        value_enum,
        value_delimiter = ','
    )]
    pub(crate) dialects: Vec<Dialect>,
    /// Workers calling the upstream at once, in all processes together [default: 16;
    /// --matrix: 8,50,200]
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',')]
    pub(crate) workers: Vec<usize>,
    /// OS processes the workers are split over [default: 1; --matrix: 1,3]
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',')]
    pub(crate) processes: Vec<usize>,
    /// Modes, comma-separated: known, high, low, bare, naive [default: all]
    #[arg(long, value_name = "MODE[,MODE...]", value_enum, value_delimiter = ',')]
    pub(crate) modes: Vec<Mode>,
    /// How long each mode (each cell) runs
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Cells run at once with --matrix
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub(crate) parallel: usize,
    /// Start this permitd binary on 127.0.0.1:<free port> with a temporary data directory
    /// and use it (instead of --server)
    #[arg(long, value_name = "PATH")]
    pub(crate) spawn_server: Option<PathBuf>,
    /// With --spawn-server: SIGTERM the server this far into each run and start it again on
    /// the same port and data directory
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "spawn_server")]
    pub(crate) restart_at: Option<Duration>,
    /// Print only the JSON lines
    #[arg(long)]
    pub(crate) json: bool,
    /// (child process) The upstream's URL: run one share of the workers and print a tally.
    #[arg(long, hide = true)]
    pub(crate) child_url: Option<String>,
    /// (child process) The resource to acquire on.
    #[arg(long, hide = true)]
    pub(crate) child_resource: Option<String>,
    /// (child process) The common start, in milliseconds since the UNIX epoch.
    #[arg(long, hide = true)]
    pub(crate) child_start_ms: Option<u64>,
}

/// Run the benchmark (or, with the hidden child flags, one process's share of it).
pub(super) async fn run(args: CoordArgs) -> anyhow::Result<std::process::ExitCode> {
    if let Some(url) = args.child_url.clone() {
        return child(args, url).await;
    }
    let lists = lists(&args)?;
    let cells = matrix::cells(&lists);
    anyhow::ensure!(!cells.is_empty(), "no cell to run");
    if let Some(at) = args.restart_at {
        anyhow::ensure!(
            !args.matrix,
            "--restart-at runs one configuration, not a matrix"
        );
        anyhow::ensure!(at < args.duration, "--restart-at must be within --duration");
    }
    let spawned = match &args.spawn_server {
        Some(bin) => Some(Arc::new(tokio::sync::Mutex::new(
            server::Spawned::start(bin).await?,
        ))),
        None => None,
    };
    let mut conn = args.conn.clone();
    if let Some(s) = &spawned {
        conn.server = s.lock().await.url();
    }
    let ctx = Arc::new(Ctx {
        conn,
        duration: args.duration,
        exe: std::env::current_exe().context("finding this binary (for --processes)")?,
        restart: args
            .restart_at
            .and_then(|at| spawned.as_ref().map(|s| (at, Arc::clone(s)))),
        seq: AtomicU64::new(0),
    });
    let parallel = if args.matrix { args.parallel.max(1) } else { 1 };
    if !args.json {
        eprintln!(
            "bench-coord: {} cell(s), {} each, {parallel} at once",
            cells.len(),
            humantime::format_duration(args.duration)
        );
    }
    let outcomes = run_cells(&cells, &ctx, parallel, args.json).await;
    if let Some(s) = spawned {
        s.lock().await.stop().await;
    }
    report(&args, &lists, &outcomes);
    Ok(std::process::ExitCode::SUCCESS)
}

/// The lists of the run, defaults filled in and checked.
fn lists(args: &CoordArgs) -> anyhow::Result<Lists> {
    fn or<T: Clone>(given: &[T], single: &[T], matrix: &[T], m: bool) -> Vec<T> {
        if !given.is_empty() {
            given.to_vec()
        } else if m {
            matrix.to_vec()
        } else {
            single.to_vec()
        }
    }
    let m = args.matrix;
    let mut modes = or(&args.modes, &Mode::ALL, &Mode::ALL, m);
    modes.dedup();
    let lists = Lists {
        rates: or(&args.rates, &[50.0], &[1.0, 3.0, 10.0, 50.0], m),
        bursts: or(
            &args.bursts,
            &[BurstSpec::Rate(1.0)],
            &[
                BurstSpec::Units(1),
                BurstSpec::Rate(1.0),
                BurstSpec::Rate(10.0),
            ],
            m,
        ),
        slack: args.slack,
        dialects: or(&args.dialects, &[Dialect::Ietf], &Dialect::ALL, m),
        workers: or(&args.workers, &[16], &[8, 50, 200], m),
        processes: or(&args.processes, &[1], &[1, 3], m),
        modes,
    };
    if !m {
        for (flag, n) in [
            ("--rate", lists.rates.len()),
            ("--burst", lists.bursts.len()),
            ("--dialect", lists.dialects.len()),
            ("--workers", lists.workers.len()),
            ("--processes", lists.processes.len()),
        ] {
            anyhow::ensure!(n == 1, "{flag} takes one value without --matrix");
        }
    }
    for &r in &lists.rates {
        anyhow::ensure!(
            r.is_finite() && (0.001..=1e6).contains(&r),
            "--rate must be between 0.001 and 1000000 units/s, got {r}"
        );
    }
    let fewest = lists.workers.iter().min().copied().unwrap_or(0);
    let most = lists.processes.iter().max().copied().unwrap_or(0);
    anyhow::ensure!(fewest >= 1, "--workers must be at least 1");
    anyhow::ensure!(
        lists.processes.iter().all(|&p| p >= 1),
        "--processes must be at least 1"
    );
    anyhow::ensure!(
        most <= fewest,
        "--processes ({most}) must not exceed --workers ({fewest})"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be above zero");
    Ok(lists)
}

/// What every cell of a run shares.
#[derive(Debug)]
struct Ctx {
    /// The server (`--server`, or the spawned one).
    conn: ConnArgs,
    duration: Duration,
    /// This binary, run again for child processes.
    exe: PathBuf,
    /// When into each run to restart the spawned server.
    restart: Option<(Duration, Arc<tokio::sync::Mutex<server::Spawned>>)>,
    /// Makes resource names unique within the run.
    seq: AtomicU64,
}

/// Run `cells`, `parallel` at once, in order of start; a cell that cannot run is an
/// outcome with its failure, never the end of the run.
async fn run_cells(cells: &[Cell], ctx: &Arc<Ctx>, parallel: usize, quiet: bool) -> Vec<Outcome> {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(cells.len());
    for &cell in cells {
        let (gate, ctx) = (Arc::clone(&gate), Arc::clone(ctx));
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await;
            run_cell(cell, &ctx).await
        }));
    }
    let total = tasks.len();
    let mut out = Vec::with_capacity(total);
    for (i, (task, cell)) in tasks.into_iter().zip(cells).enumerate() {
        let o = task
            .await
            .unwrap_or_else(|e| failed(*cell, &format!("{e}")));
        if !quiet {
            eprintln!(
                "[{}/{total}] {}: ok {}, 429 {}, errors {}{}",
                i + 1,
                o.cell.label(),
                o.tally.ok,
                o.tally.limited,
                o.tally.errors,
                o.failure
                    .as_ref()
                    .map_or_else(String::new, |f| format!(" (failed: {f})"))
            );
        }
        out.push(o);
    }
    out
}

/// A cell that could not run.
fn failed(cell: Cell, why: &str) -> Outcome {
    Outcome {
        cell,
        tally: Tally::default(),
        failure: Some(why.to_owned()),
        restart_away: None,
    }
}

/// One cell: a fresh upstream and resource, the fleet started together in every process,
/// the upstream's own counts as the result.
async fn run_cell(cell: Cell, ctx: &Ctx) -> Outcome {
    let up = upstream::Upstream::new(cell.shape());
    let (url, task) = match upstream::start(Arc::clone(&up)).await {
        Ok(x) => x,
        Err(e) => return failed(cell, &format!("{e:#}")),
    };
    let mut o = match fleet(cell, ctx, &url).await {
        Ok(o) => o,
        Err(e) => failed(cell, &format!("{e:#}")),
    };
    task.abort();
    // The upstream's count is the truth; the workers' errors come from their side.
    o.tally.ok = up.ok.load(Ordering::Relaxed);
    o.tally.limited = up.limited.load(Ordering::Relaxed);
    o
}

/// Define the cell's resource, start the children, run the parent's share, add it all up.
async fn fleet(cell: Cell, ctx: &Ctx, url: &str) -> anyhow::Result<Outcome> {
    let permitd = if cell.mode == Mode::Naive {
        None
    } else {
        let channel = super::rpc::connect(&ctx.conn, ctx.duration + ctx.conn.timeout).await?;
        let name = define(channel.clone(), &cell, ctx).await?;
        Some((channel, name))
    };
    let shares = workers::split(cell.workers, cell.processes);
    let lead = if cell.processes > 1 {
        CHILD_LEAD
    } else {
        Duration::from_millis(20)
    };
    let start_ms = epoch_ms(SystemTime::now() + lead);
    let start = instant_of(start_ms);
    let children: Vec<_> = shares
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, &n)| {
            let cmd = child_command(ctx, &cell, n, url, permitd.as_ref(), start_ms, i);
            (n, tokio::task::spawn_blocking(move || run_child(cmd)))
        })
        .collect();
    let restart = ctx.restart.as_ref().map(|(at, server)| {
        let (at, server) = (*at, Arc::clone(server));
        tokio::spawn(async move {
            tokio::time::sleep_until((start + at).into()).await;
            server.lock().await.restart().await
        })
    });
    let mut tally = workers::run(Share {
        workers: shares.first().copied().unwrap_or(0),
        url: url.to_owned(),
        permitd: permitd.clone(),
        start,
        duration: ctx.duration,
        timeout: ctx.conn.timeout,
        tag: format!("{}-0", std::process::id()),
    })
    .await;
    let mut failure = None;
    for (n, child) in children {
        match child.await {
            Ok(Ok(t)) => tally.add(&t),
            Ok(Err(e)) => {
                tally.errors += n as u64;
                failure = Some(format!("a child process failed: {e:#}"));
            }
            Err(e) => failure = Some(format!("a child process failed: {e}")),
        }
    }
    let mut restart_away = None;
    if let Some(r) = restart {
        match r.await {
            Ok(Ok(away)) => restart_away = Some(away),
            Ok(Err(e)) => failure = Some(format!("restarting the server: {e:#}")),
            Err(e) => failure = Some(format!("restarting the server: {e}")),
        }
    }
    if let Some((channel, name)) = permitd {
        // Best effort: the resource only mattered for this cell.
        let _ = QuotasClient::new(channel)
            .delete_resource(proto::DeleteResourceRequest { name })
            .await;
    }
    Ok(Outcome {
        cell,
        tally,
        failure,
        restart_away,
    })
}

/// `permitd bench-coord` again, as the `i`th child of `cell` running `workers` workers.
fn child_command(
    ctx: &Ctx,
    cell: &Cell,
    workers: usize,
    url: &str,
    permitd: Option<&(Channel, String)>,
    start_ms: u64,
    i: usize,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(&ctx.exe);
    cmd.arg("bench-coord")
        .args(["--server", &ctx.conn.server])
        .arg("--timeout")
        .arg(humantime::format_duration(ctx.conn.timeout).to_string())
        .args(["--modes", cell.mode.name()])
        .args(["--workers", &workers.to_string()])
        .arg("--duration")
        .arg(humantime::format_duration(ctx.duration).to_string())
        .args(["--child-url", url])
        .args(["--child-start-ms", &start_ms.to_string()])
        .env("PERMITD_BENCH_COORD_CHILD", i.to_string())
        .stdin(std::process::Stdio::null());
    if let Some((_, name)) = permitd {
        cmd.args(["--child-resource", name]);
    }
    cmd
}

/// Run a child to its end and read its tally line.
fn run_child(mut cmd: std::process::Command) -> anyhow::Result<Tally> {
    let out = cmd.output().context("starting a child process")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match (out.status.success(), line.and_then(Tally::from_json)) {
        (true, Some(t)) => Ok(t),
        _ => anyhow::bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// A child process: run this process's share and print its tally as one JSON line.
async fn child(args: CoordArgs, url: String) -> anyhow::Result<std::process::ExitCode> {
    let mode = args.modes.first().copied().unwrap_or(Mode::Naive);
    let workers = args.workers.first().copied().unwrap_or(1);
    let start = instant_of(
        args.child_start_ms
            .context("--child-start-ms is required")?,
    );
    let permitd = if mode == Mode::Naive {
        None
    } else {
        let channel = super::rpc::connect(&args.conn, args.duration + args.conn.timeout).await?;
        let name = args
            .child_resource
            .clone()
            .context("--child-resource is required")?;
        Some((channel, name))
    };
    let index = std::env::var("PERMITD_BENCH_COORD_CHILD").unwrap_or_default();
    let tally = workers::run(Share {
        workers,
        url,
        permitd,
        start,
        duration: args.duration,
        timeout: args.conn.timeout,
        tag: format!("{}-{index}", std::process::id()),
    })
    .await;
    println!("{}", tally.to_json());
    Ok(std::process::ExitCode::SUCCESS)
}

/// Milliseconds since the UNIX epoch.
fn epoch_ms(t: SystemTime) -> u64 {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The local instant of a wall time in epoch milliseconds (now, if it has passed by more
/// than the process has lived).
fn instant_of(epoch_ms: u64) -> Instant {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(epoch_ms);
    let (now, sys) = (Instant::now(), SystemTime::now());
    match at.duration_since(sys) {
        Ok(ahead) => now + ahead,
        Err(e) => now.checked_sub(e.duration()).unwrap_or(now),
    }
}

/// Tell permitd the cell's limits are the upstream's own (`Resource.limits_known`).
fn mark_limits_known(resource: &mut proto::Resource) {
    resource.limits_known = Some(true);
}

/// Define the cell's resource on the server, under a name no other run or cell uses.
///
/// - `known`: the upstream's rate exactly (3/s as 3 per 1 s), its burst, no learning;
/// - `high`: 100 x the rate per second, burst = amount, learning;
/// - `low`: the rate / 10 exactly (1/s as 1 per 10 s), burst = amount, learning;
/// - `bare`: no limit, learning.
async fn define(channel: Channel, cell: &Cell, ctx: &Ctx) -> anyhow::Result<String> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let name = format!(
        "bench-coord:{}:{}-{stamp}-{}",
        cell.mode.name(),
        std::process::id(),
        ctx.seq.fetch_add(1, Ordering::Relaxed)
    );
    let limit = |rate: f64, burst: u64| {
        let (amount, period) = matrix::exact_rate(rate);
        proto::Limit {
            dimension: "requests".into(),
            amount,
            period: Some(to_duration(period)),
            burst,
            scope: 0,
        }
    };
    let limits = match cell.mode {
        Mode::Known => vec![limit(cell.rate, cell.burst)],
        Mode::High => vec![limit(cell.rate * 100.0, 0)],
        Mode::Low => vec![limit(cell.rate / 10.0, 0)],
        Mode::Bare | Mode::Naive => Vec::new(),
    };
    let mut resource = proto::Resource {
        name: name.clone(),
        limits,
        learn_from_headers: Some(cell.mode != Mode::Known),
        ..Default::default()
    };
    if cell.mode == Mode::Known {
        mark_limits_known(&mut resource);
    }
    QuotasClient::new(channel)
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource),
        })
        .await
        .map_err(super::rpc::RpcError::from)
        .context("defining the bench resource")?;
    Ok(name)
}

/// Print the table (unless --json) and one JSON line per cell, worst first.
fn report(args: &CoordArgs, lists: &Lists, outcomes: &[Outcome]) {
    let rows = matrix::judged(outcomes);
    if !args.json {
        let head = if args.matrix {
            format!(
                "matrix: {} cells, {} each, {} at once; upstream tolerance {} unit(s)\n",
                outcomes.len(),
                humantime::format_duration(args.duration),
                args.parallel.max(1),
                lists.slack,
            )
        } else {
            let (rate, burst) = outcomes
                .first()
                .map_or((0.0, 0), |o| (o.cell.rate, o.cell.burst));
            format!(
                "upstream: token bucket {rate}/s, burst {burst} (tolerance {}), {} headers; \
                 {} workers in {} process(es), {} per mode\n",
                lists.slack,
                lists.dialects.first().map_or("-", |d| d.name()),
                lists.workers.first().copied().unwrap_or(0),
                lists.processes.first().copied().unwrap_or(0),
                humantime::format_duration(args.duration),
            )
        };
        print!("{head}{}", matrix::table(&rows));
    }
    for (o, n, v) in &rows {
        println!("{}", matrix::json(o, *n, v, args.duration));
    }
}
