//! The command-line client: subcommands that talk to a running permitd over gRPC
//! (`acquire`, `release`, `report`, `resources list|put|delete`, `quota`, `bench`,
//! `bench-coord`).
//!
//! This module owns the flags (clap derive) and their parsing; `commands` makes the calls
//! and prints the answers; `output` holds the formatting shared by them; `rpc` owns the
//! connection and the one place a gRPC error becomes the printed `CODE: message`; `watch`
//! owns the live view of `Quotas.Watch`. Nothing here panics on a server's answer: every
//! value is printed, absent ones as `-`.
//!
//! Exit status: 0 on success, `EXIT_DENIED` (3) when `acquire` is denied (a normal answer
//! a shell script branches on), 1 on any error (printed by `main` as `error: ...`).

mod bench;
mod commands;
mod coord;
mod output;
mod rpc;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of `acquire` when the permit is denied.
pub(crate) const EXIT_DENIED: u8 = 3;

/// The client subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClientCommand {
    /// Ask for a permit (exit status 0 granted, 3 denied, 1 error)
    ///
    /// Prints whether the permit was granted, its id, what remains per dimension and, on a
    /// denial, why and how long until a retry can succeed. Exit status: 0 when granted, 3
    /// when denied, 1 on error, so shell scripts can branch on it.
    Acquire(AcquireArgs),
    /// Give a permit back without reporting an outcome
    Release(ReleaseArgs),
    /// Report what the upstream answered to a permitted call
    ///
    /// Releases the permit (with --permit-id), reconciles its cost with --actual-cost, lets
    /// permitd learn from the upstream's headers, and prints whether and when to retry.
    Report(ReportArgs),
    /// List, define or delete resources
    Resources {
        /// What to do.
        #[command(subcommand)]
        command: ResourcesCommand,
    },
    /// Show the live state of one bucket (remaining per dimension, in flight, queued)
    Quota(QuotaArgs),
    /// One resource at a glance: totals over its live partitions and the ones under most
    /// pressure (paused, longest queue, least left, most denied)
    ///
    /// Reads Quotas.GetSummary; with --all, every partition under --partition-prefix too
    /// (Quotas.ListPartitions, page by page, in name order or by pressure).
    Summary(SummaryArgs),
    /// Watch quotas live: a table that redraws, or one JSON object per update
    ///
    /// Streams Quotas.Watch: every matching bucket first, then each change (at most one per
    /// bucket per --interval). The table shows per bucket and dimension what remains of the
    /// limit as a bar, the permits in flight, the callers queued and any cooldown counting
    /// down. Ends on Ctrl-C or when the server stops.
    Watch(WatchArgs),
    /// Load-test a running server: AcquirePermit against Health/Check (the floor)
    ///
    /// Interleaves the phases (health, grant, deny, release, batch) in rounds and prints req/s,
    /// p50/p90/p99/p99.9 latency and the ratios to the floor, as a table and one JSON line.
    Bench(bench::BenchArgs),
    /// Coordination quality: workers sharing a rate-limited upstream, with and without
    /// permitd
    ///
    /// Starts a local HTTP upstream (a token bucket of --rate units/s, capacity --burst)
    /// that sends one --dialect of rate-limit headers, then runs --workers workers (split
    /// over --processes OS processes) against it for --duration in each mode: known (the
    /// exact limit configured), high (a guess 100x too high, learning from headers), low
    /// (10x too low, learning), bare (no limit, learning) and naive (no permitd, each worker
    /// backing off on its own after a 429). Each mode starts cold: a fresh upstream and
    /// resource. Prints calls, 429s, the refused share and the utilisation of the upstream,
    /// with the targets met or missed, as a table and one JSON line per mode. --matrix runs
    /// every combination of comma lists (--rates, --bursts, --dialects, --workers,
    /// --processes, --modes), --parallel cells at once. Every mode but naive needs a server:
    /// --server, or --spawn-server to start one (--restart-at restarts it mid-run).
    BenchCoord(coord::CoordArgs),
}

/// Where the server is and how long to wait for it; taken by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnArgs {
    /// The server's URL (http:// is assumed when no scheme is given)
    #[arg(
        long,
        env = "PERMITD_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) server: String,
    /// How long to wait for the server to connect, and then to answer (acquire waits
    /// --max-wait longer)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Bearer token to present (`permitd token new` mints one)
    #[arg(
        long,
        env = "PERMITD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// The tenant to act for (operator principals only; others act for their own)
    #[arg(long, env = "PERMITD_TENANT", value_name = "TENANT")]
    pub(crate) tenant: Option<String>,
    /// CA certificate (PEM) that signed the server's: speak TLS (https://)
    #[arg(long, env = "PERMITD_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS
    #[arg(long, env = "PERMITD_CLIENT_CERT", value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, env = "PERMITD_CLIENT_KEY", value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
}

/// Flags of `permitd acquire`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AcquireArgs {
    /// The resource, e.g. openai:gpt-4o
    pub(crate) resource: String,
    /// The partition (per-user, per-key, per-channel sub-key), e.g. user:42
    #[arg(long, value_name = "PARTITION")]
    pub(crate) partition: Option<String>,
    /// What the call will use, one dimension per flag (--cost tokens=1200); an absent
    /// requests cost counts as 1
    #[arg(long = "cost", value_name = "DIM=N", value_parser = parse_amount)]
    pub(crate) cost: Vec<(String, u64)>,
    /// How long to wait in the resource's queue before giving up (default: answer at once)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) max_wait: Option<Duration>,
    /// Queue priority: higher is served first, FIFO within one priority
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub(crate) priority: i32,
    /// How long the concurrency slot is held before it is reclaimed (default: the
    /// resource's lease)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) lease: Option<Duration>,
    /// Who asks, for logs and dashboards
    #[arg(long, value_name = "ID", default_value = "permitd-cli")]
    pub(crate) client_id: String,
    /// Print one JSON object on one line instead of text
    #[arg(long)]
    pub(crate) json: bool,
    /// Connection flags.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// Flags of `permitd release`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// The permit id printed by permitd acquire
    pub(crate) permit_id: String,
    /// The upstream call was never made: give its cost back
    #[arg(long)]
    pub(crate) refund: bool,
    /// Connection flags.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// Flags of `permitd report`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["permit_id", "resource"])))]
pub(crate) struct ReportArgs {
    /// The permit the call was made under (releases it)
    #[arg(long, value_name = "ID")]
    pub(crate) permit_id: Option<String>,
    /// The resource (required without --permit-id)
    #[arg(long, value_name = "RESOURCE")]
    pub(crate) resource: Option<String>,
    /// The partition (used without --permit-id)
    #[arg(long, value_name = "PARTITION")]
    pub(crate) partition: Option<String>,
    /// HTTP status of the upstream's answer; 0 = no answer (timeout, reset)
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u32).range(0..=999))]
    pub(crate) status: u32,
    /// An upstream response header, one per flag (--header 'Retry-After: 2')
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// What the call really used, one dimension per flag (--actual-cost tokens=980)
    #[arg(long = "actual-cost", value_name = "DIM=N", value_parser = parse_amount)]
    pub(crate) actual_cost: Vec<(String, u64)>,
    /// Which attempt this was: 1 for a first try
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) attempt: u32,
    /// Connection flags.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// The `permitd resources` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum ResourcesCommand {
    /// List resources in name order
    List {
        /// Only names starting with this
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        /// Print them as TOML tables (input for `permitd resources put`).
        #[arg(
            long,
            help = "Print them as [[resources]] TOML tables (input for permitd resources put)"
        )]
        toml: bool,
        /// Connection flags.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Define or replace resources from a TOML file
    ///
    /// FILE is in the config file's syntax (see `permitd::config::parse_resources_toml`).
    #[command(long_about = "Define or replace resources from a TOML file\n\n\
        FILE holds [[resources]] tables (a whole config file works; its other sections are \
        ignored) or one resource at top level (name = \"...\"), in the config file's syntax. \
        Each resource is sent to the server in order; the first refusal stops the rest.")]
    Put {
        /// The TOML file, or - for standard input
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Connection flags.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete a resource
    Delete {
        /// The resource's name
        name: String,
        /// Connection flags.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Clear what feedback imposed on a resource: cooldowns, blocks, learned limits (admin)
    Reset {
        /// The resource's name
        name: String,
        /// Connection flags.
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Flags of `permitd quota`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct QuotaArgs {
    /// The resource
    pub(crate) resource: String,
    /// The partition; absent = the resource-wide bucket
    #[arg(long, value_name = "PARTITION")]
    pub(crate) partition: Option<String>,
    /// Connection flags.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// Flags of `permitd summary`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SummaryArgs {
    /// The resource
    pub(crate) resource: String,
    /// Only partitions whose name starts with this
    #[arg(long, value_name = "PREFIX")]
    pub(crate) partition_prefix: Option<String>,
    /// Partitions under most pressure to list (at most 100)
    #[arg(long, default_value_t = 10)]
    pub(crate) top: u32,
    /// List every matching partition instead of the top ones
    #[arg(long)]
    pub(crate) all: bool,
    /// With --all: most pressed first instead of by name
    #[arg(long, requires = "all")]
    pub(crate) by_pressure: bool,
    /// Connection flags.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// Flags of `permitd watch`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WatchArgs {
    /// Only resources whose name starts with this
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,
    /// At most one update per bucket per this interval
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// Only partitions whose name starts with this (leaves out resource-wide buckets)
    #[arg(long, value_name = "PREFIX")]
    pub(crate) partition_prefix: Option<String>,
    /// Only resource-wide buckets, no partition's (for resources with many partitions:
    /// `permitd summary` shows those at a glance)
    #[arg(long, conflicts_with = "partition_prefix")]
    pub(crate) resource_buckets_only: bool,
    /// Print one JSON object per update, one per line, instead of the table
    #[arg(long)]
    pub(crate) json: bool,
    /// Connection flags.
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
}

/// Run one client subcommand against the server and say how the process should exit.
///
/// # Errors
/// The server cannot be reached, answers with a gRPC error (shown as `CODE: message`), or
/// an input (flag, file) is invalid. `main` prints the error and exits with status 1.
pub(crate) async fn run(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Acquire(args) => commands::acquire(args).await,
        ClientCommand::Release(args) => commands::release(args).await,
        ClientCommand::Report(args) => commands::report(args).await,
        ClientCommand::Resources { command } => match command {
            ResourcesCommand::List { prefix, toml, conn } => {
                commands::resources_list(&conn, prefix.unwrap_or_default(), toml).await
            }
            ResourcesCommand::Put { file, conn } => commands::resources_put(&conn, &file).await,
            ResourcesCommand::Delete { name, conn } => {
                commands::resources_delete(&conn, name).await
            }
            ResourcesCommand::Reset { name, conn } => commands::resources_reset(&conn, name).await,
        },
        ClientCommand::Quota(args) => commands::quota(args).await,
        ClientCommand::Summary(args) => commands::summary(args).await,
        ClientCommand::Watch(args) => watch::watch(args).await,
        ClientCommand::Bench(args) => bench::run(args).await,
        ClientCommand::BenchCoord(args) => coord::run(args).await,
    }
}

/// Parse `DIM=N` (a dimension and a whole amount), for `--cost` and `--actual-cost`.
fn parse_amount(s: &str) -> Result<(String, u64), String> {
    let (dim, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected DIM=N (e.g. tokens=1200), got \"{s}\""))?;
    let dim = dim.trim();
    if dim.is_empty() {
        return Err(format!("missing dimension before '=' in \"{s}\""));
    }
    let n = n
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("amount of \"{dim}\" must be a whole number >= 0, got \"{n}\""))?;
    Ok((dim.to_owned(), n))
}

/// Parse `Name: value` (an HTTP header line), for `--header`.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got \"{s}\""))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("invalid header name in \"{s}\""));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `DIM=N` parses, and malformed amounts say what is wrong.
    #[test]
    fn amounts_parse_or_explain() {
        assert_eq!(parse_amount("tokens=1200"), Ok(("tokens".to_owned(), 1200)));
        assert_eq!(
            parse_amount(" requests = 0 "),
            Ok(("requests".to_owned(), 0))
        );
        assert!(parse_amount("tokens").unwrap_err().contains("DIM=N"));
        assert!(
            parse_amount("=5")
                .unwrap_err()
                .contains("missing dimension")
        );
        assert!(
            parse_amount("tokens=-1")
                .unwrap_err()
                .contains("whole number")
        );
    }

    /// Header lines split at the first colon, so values may hold colons (dates, URLs).
    #[test]
    fn headers_split_at_first_colon() {
        assert_eq!(
            parse_header("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT"),
            Ok((
                "Retry-After".to_owned(),
                "Wed, 21 Oct 2015 07:28:00 GMT".to_owned()
            ))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
    }
}
