//! The composition root: the only place that picks a store and wires the services.
//!
//! Start-up order: open the store (a clear error if the data directory is unusable), load
//! the resources defined at run time, then apply the config file's resources on top (the
//! file is declarative: what it names, it defines at every start), start the sweeper that
//! reclaims expired leases and idle partition buckets, and serve: gRPC on `listen`, and
//! (when `metrics_listen` is set) metrics and the dashboard over HTTP, both stopped by the
//! same shutdown signal, each draining for at most `shutdown_grace`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpListener;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::metrics;
use crate::permits::{PermitError, Registry};
use crate::proto;
use crate::server::grpc_stats::GrpcStats;
use crate::server::{self, Settings, convert};
use crate::store::SledStore;
use crate::store::{ResourceStore, StoreError};
use crate::watch::Hub;

/// How often expired leases and idle partition buckets are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened or read.
    #[error("store")]
    Store(#[from] StoreError),
    /// A resource of the config file is invalid.
    #[error("config: {0}")]
    Resource(#[from] PermitError),
    /// The server failed.
    #[error("server")]
    Server(#[from] server::ServerError),
    /// The metrics and dashboard server failed.
    #[error("metrics")]
    Metrics(#[from] metrics::MetricsError),
    /// A blocking task died.
    #[error("start-up task")]
    Join(#[from] tokio::task::JoinError),
}

/// Bind `config.listen` (and `config.metrics_listen`, if set) and serve until `shutdown`
/// resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let listener = bind(config.listen).await?;
    run(config, listener, shutdown).await
}

/// Serve on an already bound gRPC listener (tests bind `127.0.0.1:0`); metrics are served
/// on `config.metrics_listen` if set.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    run_with(config, listener, metrics_listener, shutdown).await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Serve gRPC on `listener` and, when given, metrics and the dashboard on
/// `metrics_listener` (`config.metrics_listen` is not read: tests pass a listener bound to
/// `127.0.0.1:0`).
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let dir = config.data_dir.clone();
    let store: Arc<dyn ResourceStore> =
        Arc::new(tokio::task::spawn_blocking(move || SledStore::open(&dir)).await??);
    let hub = Hub::new();
    let registry = build_registry(&config, store.as_ref(), hub.clone())?;
    let sweeper = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (reclaimed, dropped) = registry.sweep();
                if reclaimed + dropped > 0 {
                    tracing::debug!(reclaimed, dropped, "swept");
                }
            }
        })
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "permitd listening");
    }
    let settings = Settings {
        max_message_bytes: config.max_message_bytes,
        max_concurrent_streams: config.max_concurrent_streams,
        shutdown_grace: config.shutdown_grace,
        retryable_status: config.retryable_status.clone(),
        feedback_counters: Arc::default(),
        grpc_stats: Arc::new(GrpcStats::served()),
    };
    // One signal, two servers: the flag flips at shutdown, and its sender is dropped (which
    // also ends the waits) if the gRPC server stops on its own.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = metrics_listener.map(|l| {
        let state = metrics::State::new(
            registry.clone(),
            hub.clone(),
            Arc::clone(&settings.feedback_counters),
            Arc::clone(&settings.grpc_stats),
        );
        tokio::spawn(metrics::serve(
            l,
            state,
            config.shutdown_grace,
            stopped(stop_rx.clone()),
        ))
    });
    let res = server::run(
        listener,
        registry,
        hub.clone(),
        Arc::clone(&store),
        settings,
        stopped(stop_rx),
    )
    .await;
    stopper.abort();
    // Idempotent; ends the dashboards' feeds even when the gRPC server died on its own.
    hub.close();
    sweeper.abort();
    let http_res = match http {
        // Bounded by its own grace period.
        Some(task) => task
            .await
            .map_err(metrics::MetricsError::from)
            .and_then(|r| r),
        None => Ok(()),
    };
    res?;
    http_res?;
    Ok(())
}

fn build_registry(
    config: &Config,
    store: &dyn ResourceStore,
    hub: Hub,
) -> Result<Registry, AppError> {
    let template = match &config.default_resource {
        Some(t) => {
            let mut t = t.clone();
            "default".clone_into(&mut t.name);
            Some(convert::resource_from_proto(&t, "default_resource")?)
        }
        None => None,
    };
    let registry = Registry::new(Arc::new(SystemClock::new()), template, hub);
    let mut loaded = 0usize;
    for (name, bytes) in store.list_resources()? {
        // A stored definition the current version rejects is skipped loudly rather than
        // failing start-up: the others still serve, and PutResource can fix it.
        match proto::Resource::decode(bytes.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|r| convert::resource_from_proto(&r, "resource").map_err(|e| e.to_string()))
        {
            Ok(def) => {
                registry.put(def);
                loaded += 1;
            }
            Err(error) => tracing::warn!(resource = %name, %error, "stored resource skipped"),
        }
    }
    for (i, r) in config.resources.iter().enumerate() {
        let def = convert::resource_from_proto(r, &format!("resources[{i}]"))?;
        if registry.put(def) {
            tracing::info!(resource = %r.name, "config file overrides the stored definition");
        }
    }
    tracing::info!(
        stored = loaded,
        from_config = config.resources.len(),
        "resources loaded"
    );
    Ok(registry)
}
