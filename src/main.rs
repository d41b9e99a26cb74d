//! The `permitd` binary: parse the command line, then either serve (load the config, start
//! logging, run the server until SIGINT or SIGTERM) or run one client subcommand.
//!
//! Thin on purpose: everything worth testing lives in the library. Errors end here, printed
//! once as `error: ...` (with their causes) and turned into exit status 1.

use crate::cli::ClientCommand;
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use permitd::config::{Config, LogFormat, Overrides};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// The client subcommands and the bench drivers: the binary's, not the library's.
mod cli;

// mimalloc: glibc malloc and free were 12 % of a granted AcquirePermit's server CPU in the
// profile (bench/profile.md), most of it h2/hyper/tonic's per-request buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rate-limit coordination service: permits, header feedback, backoff, idempotency.
#[derive(Debug, Parser)]
#[command(name = "permitd", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands: the server, then the client's.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server
    Serve(ServeArgs),
    /// Mint bearer tokens for principals
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The client subcommands, talking to a running server.
    #[command(flatten)]
    Client(ClientCommand),
}

/// Flags of `permitd serve`; each one given wins over the config file.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (TOML): server settings and resources
    #[arg(long, env = "PERMITD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:50051]
    #[arg(long, env = "PERMITD_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./permitd-data]
    #[arg(long, env = "PERMITD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve Prometheus metrics on [default: none]
    #[arg(long, env = "PERMITD_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log line format [default: human]
    #[arg(long, env = "PERMITD_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,
    /// Log filter in tracing's env-filter syntax, e.g. info,permitd=debug [default: info]
    #[arg(long, env = "RUST_LOG", value_name = "FILTER")]
    log_filter: Option<String>,
    /// Share every limit, cooldown, record and cache entry with other replicas through this
    /// Redis (redis://[user:pass@]host:port[/db], rediss:// for TLS) [default: none, the
    /// embedded store]
    #[arg(long, env = "PERMITD_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// PEM root certificate(s) to trust for rediss:// URLs instead of the system's
    /// [default: the system roots]
    #[arg(long, env = "PERMITD_REDIS_TLS_CA_FILE", value_name = "FILE")]
    redis_tls_ca_file: Option<PathBuf>,
    /// Serve Envoy's rate limit service with these envoyproxy/ratelimit YAML rules (a file,
    /// or a directory of *.yaml) [default: none]
    #[arg(long, env = "PERMITD_RLS_CONFIG", value_name = "PATH")]
    rls_config: Option<PathBuf>,
    /// How callers authenticate: none, tokens, mtls or any [default: none]
    #[arg(long, env = "PERMITD_AUTH_MODE", value_name = "MODE")]
    auth_mode: Option<String>,
    /// Principals file ([[principals]] tables), re-read on SIGHUP
    #[arg(long, env = "PERMITD_PRINCIPALS_FILE", value_name = "FILE")]
    principals_file: Option<PathBuf>,
    /// Server certificate chain (PEM) for TLS on both listeners, re-read on SIGHUP
    #[arg(long, env = "PERMITD_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long, env = "PERMITD_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates: enables mTLS
    #[arg(long, env = "PERMITD_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Client certificates: none, optional or required [default: required with a client CA]
    #[arg(long, env = "PERMITD_TLS_CLIENT_AUTH", value_name = "MODE")]
    tls_client_auth: Option<String>,
    /// Serve a non-loopback address without auth and TLS (logged as a warning)
    #[arg(long, env = "PERMITD_INSECURE")]
    insecure: bool,
}

/// `permitd token` subcommands.
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a fresh token once, and the [[auth.principals]] block that holds its hash
    New(TokenNewArgs),
}

/// Flags of `permitd token new`.
#[derive(Debug, clap::Args)]
struct TokenNewArgs {
    /// The principal's name (logs and metrics show it, never the token)
    #[arg(long)]
    name: String,
    /// Its tenant, or "*" for an operator of every tenant
    #[arg(long)]
    tenant: String,
    /// admin, worker or viewer
    #[arg(long)]
    role: String,
    /// Ceiling on the priority its AcquirePermit calls may ask for
    #[arg(long, allow_negative_numbers = true)]
    max_priority: Option<i32>,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines
    Human,
    /// One JSON object per line
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parse the command line and dispatch.
fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Token {
            command: TokenCommand::New(args),
        } => token_new(&args),
        Command::Client(cmd) => {
            // One thread suffices for a single call; the load generator uses every core it
            // is given (pin it with taskset to keep it off the server's).
            let rt = if matches!(
                cmd,
                cli::ClientCommand::Bench(_) | cli::ClientCommand::BenchCoord(_)
            ) {
                tokio::runtime::Builder::new_multi_thread()
            } else {
                tokio::runtime::Builder::new_current_thread()
            }
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
            rt.block_on(cli::run(cmd))
        }
    }
}

/// `permitd serve`: config, logging, runtime, signals, then the server until shutdown.
fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        metrics_listen: args.metrics_listen,
        log_format: args.log_format.map(LogFormat::from),
        log_filter: args.log_filter,
        redis_url: args.redis_url,
        redis_tls_ca_file: args.redis_tls_ca_file,
        rls_config: args.rls_config,
        security: permitd::config::SecurityOverrides {
            auth_mode: args.auth_mode,
            principals_file: args.principals_file,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            tls_client_ca: args.tls_client_ca,
            tls_client_auth: args.tls_client_auth,
            insecure: args.insecure,
        },
    };
    let config = Config::load(args.config.as_deref(), overrides)?;
    init_tracing(&config)?;
    // One worker per CPU the process may really use (available_parallelism honours affinity
    // and the cgroup quota); on one CPU a single-threaded runtime, which skips the
    // work-stealing machinery a lone worker pays for on every wake-up.
    let workers = config
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let res = rt.block_on(async {
        let shutdown = shutdown_signal()?;
        permitd::app::serve(config, shutdown).await?;
        anyhow::Ok(())
    });
    // A blocking call stuck on a failed disk must not keep the process from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    res?;
    Ok(ExitCode::SUCCESS)
}

/// `permitd token new`: check the principal's fields as the server will, then print the
/// token (once: only its hash is kept) and the config block.
fn token_new(args: &TokenNewArgs) -> anyhow::Result<ExitCode> {
    let token =
        permitd::auth::token::mint().map_err(|_| anyhow::anyhow!("the OS random source failed"))?;
    let hash = permitd::auth::token::hex(&permitd::auth::token::sha256(token.as_bytes()));
    let block = permitd::auth::principals::block(
        &args.name,
        &args.tenant,
        &args.role,
        args.max_priority,
        &hash,
    )?;
    println!("token: {token}");
    println!("(shown once; permitd keeps only its SHA-256)\n");
    print!("{block}");
    Ok(ExitCode::SUCCESS)
}

/// Log to stderr in the configured format, filtered by the configured filter.
fn init_tracing(config: &Config) -> anyhow::Result<()> {
    // Config::load has already checked that the filter parses.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("invalid log filter \"{}\"", config.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let installed = match config.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// A future that resolves on the first SIGINT (Ctrl-C) or SIGTERM. The handlers are
/// installed now, before the server starts, so an early signal is not lost to the default
/// action (which would kill the process without draining).
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown requested, draining");
    })
}

/// A future that resolves on Ctrl-C (platforms without Unix signals).
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("shutdown requested, draining"),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for Ctrl-C; stop the process another way");
                std::future::pending::<()>().await;
            }
        }
    })
}
