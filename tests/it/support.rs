//! Test harness: the real server (the same `app::run` as `permitd serve`) on 127.0.0.1:0
//! with a temporary sled directory, real tonic clients, and a shutdown signal the test
//! controls.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use permitd::config::Config;
use permitd::proto::{
    self, cache_client::CacheClient, idempotency_client::IdempotencyClient,
    permits_client::PermitsClient, quotas_client::QuotasClient,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running server.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// Where metrics and the dashboard are served (`start_with_metrics`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), permitd::app::AppError>>>,
    _dir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
}

impl TestServer {
    /// Start on a fresh temporary data directory.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let mut s = Self::start_with(Config {
            data_dir: path,
            ..Config::default()
        })
        .await;
        s._dir = Some(dir);
        s
    }

    /// Start on an existing data directory (restart tests).
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_with(Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        })
        .await
    }

    /// Start on a fresh temporary data directory with `tune` applied to the default config.
    pub async fn start_tuned(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        tune(&mut config);
        let mut s = Self::start_with(config).await;
        s._dir = Some(dir);
        s
    }

    /// Start with a given config (its listen address is ignored).
    pub async fn start_with(config: Config) -> Self {
        Self::start_inner(config, false).await
    }

    /// Start on a fresh temporary data directory, with metrics and the dashboard on
    /// another 127.0.0.1:0 listener.
    pub async fn start_with_metrics() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_inner(
            Config {
                data_dir: dir.path().to_path_buf(),
                ..Config::default()
            },
            true,
        )
        .await;
        s._dir = Some(dir);
        s
    }

    /// Start on a fresh temporary data directory, with metrics, and `tune` applied (auth).
    pub async fn start_secure(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        tune(&mut config);
        let mut s = Self::start_inner(config, true).await;
        s._dir = Some(dir);
        s
    }

    async fn start_inner(config: Config, metrics: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics_listener = if metrics {
            Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind metrics"),
            )
        } else {
            None
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("metrics addr"));
        let data_dir = config.data_dir.clone();
        let tls = config.tls.is_some();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(permitd::app::run_with(
            config,
            listener,
            metrics_listener,
            async {
                let _ = rx.await;
            },
        ));
        let s = Self {
            addr,
            metrics_addr,
            stop: Some(tx),
            task: Some(task),
            _dir: None,
            data_dir,
        };
        // Over TLS the test waits itself (it holds the CA).
        if !tls {
            s.wait_ready().await;
        }
        s
    }

    /// Wait until Health says SERVING (the store is opened before the listener serves).
    async fn wait_ready(&self) {
        // The listener is bound before the server starts, so the call simply waits in its
        // backlog until the server serves; Health/Watch then streams the status as it
        // changes: an event, not a polling loop.
        let ready = async {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(self.channel().await);
            let mut statuses = health
                .watch(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health watch")
                .into_inner();
            while let Some(s) = statuses.message().await.expect("health stream") {
                if s.status == 1 {
                    return;
                }
            }
            panic!("health stream ended before SERVING");
        };
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("server never became ready");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new HTTP/2 connection.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    pub async fn permits(&self) -> PermitsClient<Channel> {
        PermitsClient::new(self.channel().await)
    }

    pub async fn quotas(&self) -> QuotasClient<Channel> {
        QuotasClient::new(self.channel().await)
    }

    pub async fn idempotency(&self) -> IdempotencyClient<Channel> {
        IdempotencyClient::new(self.channel().await)
    }

    pub async fn cache(&self) -> CacheClient<Channel> {
        CacheClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Signal shutdown and join the server; returns how long the drain took.
    pub async fn stop(mut self) -> Duration {
        let t = std::time::Instant::now();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server result");
        }
        t.elapsed()
    }

    /// Signal shutdown without waiting.
    pub fn signal_stop(&mut self) -> Option<JoinHandle<Result<(), permitd::app::AppError>>> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn dur(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap(),
        nanos: i32::try_from(d.subsec_nanos()).unwrap(),
    }
}

pub fn from_dur(d: &prost_types::Duration) -> Duration {
    Duration::new(
        u64::try_from(d.seconds).unwrap(),
        u32::try_from(d.nanos).unwrap(),
    )
}

pub fn from_ts(t: &prost_types::Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).unwrap(),
            u32::try_from(t.nanos).unwrap(),
        )
}

pub fn limit(dimension: &str, amount: u64, period: Duration, burst: u64) -> proto::Limit {
    proto::Limit {
        dimension: dimension.into(),
        amount,
        period: Some(dur(period)),
        burst,
        scope: 0,
    }
}

pub fn resource(name: &str, limits: Vec<proto::Limit>, concurrency: u32) -> proto::Resource {
    proto::Resource {
        name: name.into(),
        limits,
        concurrency,
        // The tests' limits are the truth: no slow start (the feedback tests that discover
        // limits say otherwise).
        limits_known: Some(true),
        ..Default::default()
    }
}

/// Define a resource through the API.
pub async fn put(server: &TestServer, r: proto::Resource) {
    server
        .quotas()
        .await
        .put_resource(proto::PutResourceRequest { resource: Some(r) })
        .await
        .expect("put_resource");
}

pub fn acquire_req(resource: &str) -> proto::AcquirePermitRequest {
    proto::AcquirePermitRequest {
        resource: resource.into(),
        ..Default::default()
    }
}

/// A resource's resource-wide bucket, as GetQuota shows it.
pub async fn quota(server: &TestServer, name: &str) -> proto::QuotaUpdate {
    server
        .quotas()
        .await
        .get_quota(proto::GetQuotaRequest {
            resource: name.into(),
            partition: String::new(),
        })
        .await
        .expect("get_quota")
        .into_inner()
}

/// Wait (bounded) until a bucket's queue holds `depth` waiters: the event the queue tests
/// order their steps by.
pub async fn wait_queue_depth(server: &TestServer, resource: &str, partition: &str, depth: u32) {
    let mut q = server.quotas().await;
    for _ in 0..1000 {
        let u = q
            .get_quota(proto::GetQuotaRequest {
                resource: resource.into(),
                partition: partition.into(),
            })
            .await
            .expect("get_quota")
            .into_inner();
        if u.queue_depth == depth {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("queue of {resource} never reached depth {depth}");
}

/// Percentile of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// This process's resident memory in KiB (the in-process server included).
pub fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
