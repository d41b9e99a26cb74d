//! Configuration: the raw settings (a TOML file, then command-line overrides) validated once
//! into a typed [`Config`].
//!
//! This module owns the file's shape and the server settings' bounds. It checks TOML syntax,
//! types, durations and enum names, and names the offending field in every error
//! (`resources[2].limits[0].period: invalid duration "5 parsecs"`). It does not judge
//! resource limits: the file's resources become proto `Resource`s that the server
//! validates in the same place as those arriving through `PutResource`, so the two paths
//! cannot drift apart. The resource TOML mapping (both directions) lives in
//! `config::resources` and is shared with the command-line client.

mod error;
mod limits;
mod records;
mod redis;
mod resources;
mod security;

use crate::proto::Resource;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
use resources::{RawResource, parse_duration};
pub use resources::{parse_resources_toml, resource_to_toml};
pub use security::SecurityOverrides;

/// Smallest accepted `server.max_message_bytes` (4 KiB).
const MIN_MESSAGE_BYTES: u64 = 4 * 1024;
/// Largest accepted `server.max_message_bytes` (64 MiB).
const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest accepted `server.shutdown_grace`.
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(10 * 60);

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default formatter).
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on. Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Directory of the embedded store. Default `./permitd-data`.
    pub data_dir: PathBuf,
    /// Address of the Prometheus metrics endpoint; `None` (the default) serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// How logs are written. Default: human.
    pub log_format: LogFormat,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax. Default `info`.
    pub log_filter: String,
    /// How long shutdown waits for in-flight calls and streams to drain. Default 10 s.
    pub shutdown_grace: Duration,
    /// Largest decoded gRPC message accepted. Default 256 KiB.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams allowed per connection. Default 1024.
    pub max_concurrent_streams: u32,
    /// Runtime worker threads; `None`: one per CPU the process may run on (affinity and
    /// cgroup quota), and a single-threaded runtime when that is one.
    pub worker_threads: Option<usize>,
    /// Upstream statuses worth a retry (0 = no answer). Default 0, 429, 502, 503, 504.
    pub retryable_status: Vec<u32>,
    /// Template for resources created on first use (its name is empty); `None` makes an
    /// unknown resource `NOT_FOUND`.
    pub default_resource: Option<Resource>,
    /// The resources declared in the file, not yet validated (the server does that).
    pub resources: Vec<Resource>,
    /// The `[idempotency]` section: record and lock TTLs, result cap, sweeper.
    pub idempotency: crate::idempotency::Settings,
    /// The `[cache]` section: default TTL, value cap, byte budget, sweeper.
    pub cache: crate::cache::Settings,
    /// The `[redis]` section (or `--redis-url`): share every state with other replicas
    /// through Redis. `None`: the embedded default.
    pub redis: Option<crate::cluster::Settings>,
    /// The `[auth]` section: how callers authenticate, and the principals.
    pub auth: crate::auth::Settings,
    /// The `[tls]` section: TLS on both listeners; `None`: plaintext.
    pub tls: Option<crate::tls::Settings>,
    /// The `[limits]` section: caps on what clients can make the server hold.
    pub caps: crate::permits::caps::Caps,
    /// Envoy's rate limit service: its rules, loaded (`[rls]`, `--rls-config`).
    pub rls: Option<crate::rls::Rls>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./permitd-data"),
            metrics_listen: None,
            log_format: LogFormat::Human,
            log_filter: "info".to_owned(),
            shutdown_grace: Duration::from_secs(10),
            max_message_bytes: 256 * 1024,
            max_concurrent_streams: 1024,
            worker_threads: None,
            retryable_status: vec![0, 429, 502, 503, 504],
            default_resource: None,
            resources: Vec::new(),
            idempotency: crate::idempotency::Settings::default(),
            cache: crate::cache::Settings::default(),
            redis: None,
            auth: crate::auth::Settings::default(),
            tls: None,
            caps: crate::permits::caps::Caps::default(),
            rls: None,
        }
    }
}

/// Settings given on the command line (or its environment variables); each one set wins
/// over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--log-filter` (or `RUST_LOG`).
    pub log_filter: Option<String>,
    /// `--redis-url` (or `PERMITD_REDIS_URL`).
    pub redis_url: Option<String>,
    /// `--redis-tls-ca-file` (or `PERMITD_REDIS_TLS_CA_FILE`).
    pub redis_tls_ca_file: Option<PathBuf>,
    /// `--rls-config` (or `PERMITD_RLS_CONFIG`).
    pub rls_config: Option<PathBuf>,
    /// The `--auth-*`, `--tls-*` and `--insecure` flags.
    pub security: SecurityOverrides,
}

/// The file as written: everything optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    server: RawServer,
    default_resource: Option<RawResource>,
    #[serde(default)]
    pub(crate) resources: Vec<RawResource>,
    #[serde(default)]
    idempotency: records::RawIdempotency,
    #[serde(default)]
    cache: records::RawCache,
    #[serde(default)]
    redis: redis::RawRedis,
    #[serde(default)]
    auth: security::RawAuth,
    #[serde(default)]
    tls: security::RawTls,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    rls: RawRls,
}

/// The `[rls]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRls {
    /// envoyproxy/ratelimit YAML: a file or a directory of them.
    config: Option<PathBuf>,
    /// The tenant whose namespace the rules' buckets live in.
    tenant: Option<String>,
    /// none | x-ratelimit | ietf | both.
    response_headers: Option<String>,
}

impl RawRls {
    fn build(self, flag: Option<PathBuf>) -> Result<Option<crate::rls::Rls>, ConfigError> {
        let Some(path) = flag.or(self.config) else {
            return Ok(None);
        };
        let tenant = self
            .tenant
            .unwrap_or_else(|| crate::auth::tenant::DEFAULT_TENANT.to_owned());
        crate::auth::tenant::check_tenant(&tenant).map_err(|e| ConfigError::Conflict {
            field: "rls.tenant".into(),
            reason: e.to_string(),
        })?;
        let headers = match self.response_headers.as_deref() {
            None => crate::rls::Headers::None,
            Some(v) => crate::rls::Headers::parse(v).ok_or_else(|| ConfigError::Conflict {
                field: "rls.response_headers".into(),
                reason: format!("{v:?}: expected none, x-ratelimit, ietf or both"),
            })?,
        };
        let config = crate::rls::RlsConfig::load(&path)?;
        Ok(Some(crate::rls::Rls {
            config: std::sync::Arc::new(config),
            tenant,
            headers,
            detail: std::sync::Arc::default(),
        }))
    }
}

/// The `[server]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    metrics_listen: Option<String>,
    log_format: Option<String>,
    log_filter: Option<String>,
    shutdown_grace: Option<String>,
    max_message_bytes: Option<i64>,
    max_concurrent_streams: Option<i64>,
    retryable_status: Option<Vec<i64>>,
    worker_threads: Option<i64>,
}

impl Config {
    /// Read the config file at `path` (if any) and apply `overrides` on top of it; with no
    /// file, the defaults plus the overrides.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or a setting is invalid.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Self::build(RawFile::default(), overrides);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw = parse_toml(&text, &format!("config file {}", path.display()))?;
        Self::build(raw, overrides)
    }

    /// Parse config TOML text and apply `overrides` on top of it.
    ///
    /// # Errors
    /// The text does not parse, or a setting is invalid.
    pub fn from_toml_str(text: &str, overrides: Overrides) -> Result<Config, ConfigError> {
        Self::build(parse_toml(text, "config text")?, overrides)
    }

    /// Turn the raw file plus overrides into a validated config.
    fn build(raw: RawFile, overrides: Overrides) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let s = raw.server;

        let listen = match overrides.listen {
            Some(a) => a,
            None => s
                .listen
                .map(|v| parse_addr("server.listen", &v))
                .transpose()?
                .unwrap_or(defaults.listen),
        };
        let metrics_listen = match overrides.metrics_listen {
            Some(a) => Some(a),
            None => s
                .metrics_listen
                .map(|v| parse_addr("server.metrics_listen", &v))
                .transpose()?,
        };
        let data_dir = overrides
            .data_dir
            .or(s.data_dir)
            .unwrap_or(defaults.data_dir);
        let log_format = match (overrides.log_format, s.log_format) {
            (Some(f), _) => f,
            (None, Some(v)) => parse_log_format(&v)?,
            (None, None) => defaults.log_format,
        };
        let (log_filter, filter_field) = match (overrides.log_filter, s.log_filter) {
            (Some(f), _) => (f, "--log-filter/RUST_LOG"),
            (None, Some(f)) => (f, "server.log_filter"),
            (None, None) => (defaults.log_filter, "server.log_filter"),
        };
        if let Err(source) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(ConfigError::InvalidLogFilter {
                field: filter_field.to_owned(),
                value: log_filter,
                source,
            });
        }

        let shutdown_grace = match s.shutdown_grace {
            Some(v) => {
                let d = parse_duration("server.shutdown_grace", &v)?;
                if d > MAX_SHUTDOWN_GRACE {
                    return Err(ConfigError::OutOfRange {
                        field: "server.shutdown_grace".to_owned(),
                        value: format!("\"{v}\""),
                        range: "0s to 10m".to_owned(),
                    });
                }
                d
            }
            None => defaults.shutdown_grace,
        };
        let max_message_bytes = match s.max_message_bytes {
            Some(n) => {
                let n = in_range(
                    "server.max_message_bytes",
                    n,
                    MIN_MESSAGE_BYTES,
                    MAX_MESSAGE_BYTES,
                )?;
                // In range means at most 64 MiB, which fits any usize permitd runs on.
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            None => defaults.max_message_bytes,
        };
        let max_concurrent_streams = match s.max_concurrent_streams {
            Some(n) => {
                let n = in_range("server.max_concurrent_streams", n, 1, u64::from(u32::MAX))?;
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            None => defaults.max_concurrent_streams,
        };

        let worker_threads = s
            .worker_threads
            .map(|n| in_range("server.worker_threads", n, 1, 1024))
            .transpose()?
            .map(|n| usize::try_from(n).unwrap_or(1));
        let retryable_status = match s.retryable_status {
            Some(codes) => codes
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let c = in_range(&format!("server.retryable_status[{i}]"), c, 0, 999)?;
                    Ok(u32::try_from(c).unwrap_or(0))
                })
                .collect::<Result<Vec<_>, ConfigError>>()?,
            None => defaults.retryable_status,
        };

        let default_resource = raw
            .default_resource
            .map(|r| r.into_template("default_resource"))
            .transpose()?;
        let resources = raw
            .resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.into_server_proto(&format!("resources[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        let idempotency = raw.idempotency.build()?;
        let cache = raw.cache.build()?;
        let redis = raw
            .redis
            .build(overrides.redis_url, overrides.redis_tls_ca_file)?;

        let auth = raw.auth.build(&overrides.security)?;
        let tls = raw.tls.build(&overrides.security)?;
        security::check(
            &auth,
            tls.as_ref(),
            &[
                ("server.listen", Some(listen)),
                ("server.metrics_listen", metrics_listen),
            ],
            overrides.security.insecure,
        )?;

        let caps = raw.limits.build()?;
        let rls = raw.rls.build(overrides.rls_config)?;
        Ok(Config {
            caps,
            rls,
            auth,
            tls,
            listen,
            data_dir,
            metrics_listen,
            log_format,
            log_filter,
            shutdown_grace,
            max_message_bytes,
            max_concurrent_streams,
            worker_threads,
            retryable_status,
            default_resource,
            resources,
            idempotency,
            cache,
            redis,
        })
    }
}

/// Deserialize TOML text, naming `origin` in the error.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        origin: origin.to_owned(),
        source: Box::new(source),
    })
}

/// Parse a socket address, naming `field` in the error.
fn parse_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::InvalidAddress {
        field: field.to_owned(),
        value: value.to_owned(),
    })
}

/// Parse `human` or `json`.
fn parse_log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::InvalidEnum {
            field: "server.log_format".to_owned(),
            value: value.to_owned(),
            expected: "human, json",
        }),
    }
}

/// Check `min <= n <= max` for a TOML integer.
fn in_range(field: &str, n: i64, min: u64, max: u64) -> Result<u64, ConfigError> {
    match u64::try_from(n) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value: n.to_string(),
            range: format!("{min} to {max}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{BackoffKind, LimitScope};

    const FULL: &str = r#"
[server]
listen = "127.0.0.1:50052"
data_dir = "/var/lib/permitd"
metrics_listen = "127.0.0.1:9464"
log_format = "json"
log_filter = "info,permitd=debug"
shutdown_grace = "5s"
max_message_bytes = 262144
max_concurrent_streams = 512

[default_resource]
concurrency = 10
[[default_resource.limits]]
dimension = "requests"
amount = 60
period = "1m"

[[resources]]
name = "openai:gpt-4o"
concurrency = 50
lease = "2m"
per_partition = false
max_queue = 1000
learn_from_headers = true
dimensions = ["tokens"]
[[resources.limits]]
dimension = "requests"
amount = 500
period = "1m"
burst = 0
scope = "resource"
[[resources.limits]]
dimension = "tokens"
amount = 30000
period = "1m"
scope = "partition"
[resources.backoff]
kind = "full_jitter"
base = "500ms"
max = "60s"
multiplier = 2.0
max_attempts = 6
max_retry_after = "15m"

[[resources]]
name = "github:rest"
"#;

    /// The whole error chain on one line, as `main` prints it.
    fn chain(e: &ConfigError) -> String {
        let mut out = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            out.push_str(": ");
            out.push_str(&s.to_string());
            src = s.source();
        }
        out
    }

    /// A protobuf duration of whole seconds plus nanoseconds.
    fn pd(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    /// Every documented key of the file is accepted and mapped onto Config and the protos.
    #[test]
    fn full_example_parses() {
        let c = Config::from_toml_str(FULL, Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/permitd"));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_filter, "info,permitd=debug");
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.max_message_bytes, 262_144);
        assert_eq!(c.max_concurrent_streams, 512);

        let d = c.default_resource.unwrap();
        assert_eq!(d.name, "");
        assert_eq!(d.concurrency, 10);
        assert_eq!(d.limits[0].period, pd(60, 0));

        assert_eq!(c.resources.len(), 2);
        let r = &c.resources[0];
        assert_eq!(r.name, "openai:gpt-4o");
        assert_eq!((r.concurrency, r.max_queue), (50, 1000));
        assert_eq!(r.lease, pd(120, 0));
        assert!(!r.per_partition);
        assert_eq!(r.learn_from_headers, Some(true));
        assert_eq!(r.dimensions, vec!["tokens".to_owned()]);
        assert_eq!(r.limits[0].amount, 500);
        assert_eq!(r.limits[0].scope, LimitScope::Resource as i32);
        assert_eq!(r.limits[1].scope, LimitScope::Partition as i32);
        let b = r.backoff.as_ref().unwrap();
        assert_eq!(b.kind, BackoffKind::FullJitter as i32);
        assert_eq!(b.base, pd(0, 500_000_000));
        assert_eq!(b.max, pd(60, 0));
        assert!((b.multiplier - 2.0).abs() < f64::EPSILON);
        assert_eq!(b.max_attempts, 6);
        assert_eq!(b.max_retry_after, pd(900, 0));

        let bare = &c.resources[1];
        assert_eq!(bare.lease, None);
        assert_eq!(bare.learn_from_headers, None);
        assert_eq!(bare.backoff, None);
    }

    /// An empty file (and no file at all) yields the documented defaults.
    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml_str("", Overrides::default()).unwrap();
        let d = Config::load(None, Overrides::default()).unwrap();
        for c in [c, d] {
            assert_eq!(c.listen, "127.0.0.1:50051".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("./permitd-data"));
            assert_eq!(c.log_format, LogFormat::Human);
            assert_eq!(c.max_message_bytes, 256 * 1024);
            assert!(c.default_resource.is_none() && c.resources.is_empty());
        }
    }

    /// A misspelt key is an error that names it, not silently ignored.
    #[test]
    fn unknown_field_refused_naming_it() {
        let e = Config::from_toml_str("[server]\nlisten_addr = \"x\"\n", Overrides::default())
            .unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        assert!(chain(&e).contains("listen_addr"), "{}", chain(&e));

        let e = Config::from_toml_str(
            "[[resources]]\nname = \"a\"\n[[resources.limits]]\ndimension = \"requests\"\nammount = 5\n",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(chain(&e).contains("ammount"), "{}", chain(&e));
    }

    /// A bad duration deep in the file names its full path, index by index.
    #[test]
    fn bad_duration_names_the_field_path() {
        let text = "[[resources]]\nname = \"a\"\n[[resources]]\nname = \"b\"\n[[resources]]\nname = \"c\"\n[[resources.limits]]\ndimension = \"requests\"\namount = 5\nperiod = \"5 parsecs\"\n";
        let e = Config::from_toml_str(text, Overrides::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resources[2].limits[0].period: invalid duration \"5 parsecs\""
        );
        let e = Config::from_toml_str("[server]\nshutdown_grace = \"soon\"", Overrides::default())
            .unwrap_err();
        assert!(e.to_string().starts_with("server.shutdown_grace: "), "{e}");
    }

    /// Addresses, enums and the server's numeric bounds are checked and named.
    #[test]
    fn server_settings_are_bounded() {
        let bad = [
            (
                "listen = \"x\"",
                "server.listen: invalid socket address \"x\"",
            ),
            ("log_format = \"xml\"", "server.log_format: unknown value"),
            ("shutdown_grace = \"11m\"", "server.shutdown_grace: "),
            ("max_message_bytes = 1024", "server.max_message_bytes: 1024"),
            ("max_message_bytes = 67108865", "server.max_message_bytes: "),
            (
                "max_concurrent_streams = 0",
                "server.max_concurrent_streams: 0",
            ),
            (
                "log_filter = \"=[\"",
                "server.log_filter: invalid log filter",
            ),
        ];
        for (line, want) in bad {
            let e = Config::from_toml_str(&format!("[server]\n{line}\n"), Overrides::default())
                .unwrap_err();
            assert!(e.to_string().starts_with(want), "{line}: {e}");
        }
        let e = Config::from_toml_str(
            "[[resources]]\nname = \"a\"\n[resources.backoff]\nkind = \"linear\"\n",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("resources[0].backoff.kind: unknown value \"linear\""),
            "{e}"
        );
        let e = Config::from_toml_str("[[resources]]\nconcurrency = 1\n", Overrides::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "resources[0].name: missing");
    }

    /// Every flag that is set replaces the file's value; unset flags leave it alone.
    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            listen: Some("0.0.0.0:6000".parse().unwrap()),
            data_dir: Some(PathBuf::from("/tmp/x")),
            metrics_listen: Some("0.0.0.0:9000".parse().unwrap()),
            log_format: Some(LogFormat::Human),
            log_filter: Some("warn".to_owned()),
            redis_url: None,
            redis_tls_ca_file: None,
            rls_config: None,
            // 0.0.0.0 without auth and TLS is refused unless asked for.
            security: SecurityOverrides {
                insecure: true,
                ..SecurityOverrides::default()
            },
        };
        let c = Config::from_toml_str(FULL, o).unwrap();
        assert_eq!(c.listen, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Human);
        assert_eq!(c.log_filter, "warn");
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));

        let o = Overrides {
            log_filter: Some("=[".to_owned()),
            ..Overrides::default()
        };
        let e = Config::from_toml_str("", o).unwrap_err();
        assert!(e.to_string().starts_with("--log-filter/RUST_LOG: "), "{e}");
    }

    /// `load` parses a file from disk, and a missing file's error names the path.
    #[test]
    fn load_reads_a_file_and_names_it_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("permitd.toml");
        std::fs::write(&path, FULL).unwrap();
        let c = Config::load(Some(&path), Overrides::default()).unwrap();
        assert_eq!(c.resources.len(), 2);
        let missing = dir.path().join("nope.toml");
        let e = Config::load(Some(&missing), Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }
}
