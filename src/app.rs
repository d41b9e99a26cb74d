//! The composition root: the only place that picks a store and wires the services.
//!
//! Start-up order: open the store (a clear error if the data directory is unusable), load
//! the resources defined at run time, then apply the config file's resources on top (the
//! file is declarative: what it names, it defines at every start), start the sweeper that
//! reclaims expired leases and idle partition buckets, open the idempotency records and
//! the cache on the same store (one group-commit flusher for both, an expiry sweeper for
//! each), and serve: gRPC on `listen`, and (when `metrics_listen` is set) metrics and the
//! dashboard over HTTP, both stopped by the same shutdown signal, each draining for at
//! most `shutdown_grace`. On the way out the record sweepers are joined and the flusher
//! closed, so the store is released before `run` returns (a restart in the same process
//! can reopen it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpListener;

use crate::cache::Cache;
use crate::clock::{Clock, SystemClock};
use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::engine::PermitEngine;
use crate::idempotency::Idempotency;
use crate::learned;
use crate::metrics;
use crate::permits::ResourceDef;
use crate::permits::{PermitError, Registry};
use crate::proto;
use crate::server::grpc_stats::GrpcStats;
use crate::server::{self, Records, Settings, convert};
use crate::store::{GroupCommit, RecordStore, RedisStore, SledStore};
use crate::store::{OpenHint, ResourceStore, StoreError};
use crate::sweeper;
use crate::watch::Hub;

/// How often expired leases and idle partition buckets are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a starting permitd waits for the data directory's lock, held by a predecessor
/// that is still exiting, before saying another permitd has it.
const LOCK_WAIT: Duration = Duration::from_secs(2);

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
    /// The cluster engine could not start (a bad Redis URL).
    #[error("cluster: {0}")]
    Cluster(String),
    /// The principals cannot be read.
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::PrincipalsError),
    /// A TLS file cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The store failed to make writes durable (an IO or fsync error): permitd stopped
    /// serving so its supervisor restarts it on a reopened store.
    #[error("store fault: {0}")]
    StoreFault(String),
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
    // Credentials and certificates first: a bad file stops the start before anything opens.
    let auth = Arc::new(crate::auth::Auth::new(config.auth.clone())?);
    let tls = config
        .tls
        .clone()
        .map(crate::tls::Tls::load)
        .transpose()?
        .map(Arc::new);
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    if !loopback && (auth.mode() == crate::auth::Mode::None || tls.is_none()) {
        tracing::warn!(
            "serving a non-loopback address without auth and TLS (--insecure): anyone who \
             reaches it can redefine limits and read every record"
        );
    }
    let reloader = spawn_reloader(Arc::clone(&auth), tls.clone());
    let (store, records_store): (Arc<dyn ResourceStore>, Arc<dyn RecordStore>) = match &config.redis
    {
        Some(r) => {
            let redis = Arc::new(open_redis_store(r).await?);
            (Arc::clone(&redis) as Arc<dyn ResourceStore>, redis)
        }
        None => {
            let dir = config.data_dir.clone();
            let sled = Arc::new(
                tokio::task::spawn_blocking(move || SledStore::open_within(&dir, LOCK_WAIT))
                    .await??,
            );
            (Arc::clone(&sled) as Arc<dyn ResourceStore>, sled)
        }
    };
    let hub = Hub::new();
    let registry = match &config.redis {
        Some(_) => load_with_retry(&config, &store, &hub).await?,
        None => build_registry(&config, store.as_ref(), hub.clone())?,
    };
    // The one place the engine is picked: the services only see the contract.
    let engine: Arc<dyn PermitEngine> = match &config.redis {
        Some(r) => start_cluster(&config, r, &registry, &hub, &store)?,
        None => Arc::new(registry.clone()),
    };
    // Record expiry (idempotency locks, TTLs) compares wall-clock times written by every
    // replica: in a cluster they all read Redis's clock, so skewed hosts still agree.
    let records_clock: Arc<dyn Clock> = match &config.redis {
        Some(r) => Arc::new(
            cluster::redis_clock(r)
                .await
                .map_err(|e| AppError::Cluster(e.to_string()))?,
        ),
        None => Arc::new(SystemClock::new()),
    };
    // What buckets learned before a restart (embedded: a cluster keeps it in Redis), then
    // kept as it changes.
    let learned = match &config.redis {
        Some(_) => None,
        None => {
            let (r, s) = (registry.clone(), Arc::clone(&records_store));
            let (restarted, restored) = tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((
                    learned::restarted(s.as_ref())?,
                    learned::restore(&r, s.as_ref())?,
                ))
            })
            .await??;
            if restored > 0 {
                tracing::info!(buckets = restored, "learned limits restored");
            }
            if restarted {
                // A restart must not hand every worker a fresh burst at once.
                registry.resume_empty();
            }
            Some((
                learned::spawn(registry.clone(), Arc::clone(&records_store)),
                registry.clone(),
                Arc::clone(&records_store),
            ))
        }
    };
    let (records, commit) = open_records(&config, records_store, records_clock).await?;
    let record_sweepers = [
        sweeper::spawn(
            config.idempotency.sweep_interval,
            Arc::clone(&records.clock),
            Arc::new(records.idempotency.clone()),
        ),
        sweeper::spawn(
            config.cache.sweep_interval,
            Arc::clone(&records.clock),
            Arc::new(records.cache.clone()),
        ),
    ];
    let sweeper = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (reclaimed, dropped) = engine.sweep();
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
        engine,
        auth: Arc::clone(&auth),
        tls: tls.clone(),
        max_connections: config.caps.max_connections,
        rls: config.rls.clone().map(Arc::new),
    };
    // One signal, two servers: the flag flips at shutdown, and its sender is dropped (which
    // also ends the waits) if the gRPC server stops on its own.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // A store that cannot make writes durable any more (sled latches its first IO error)
    // stops the server like a signal: health turns NOT_SERVING at once, calls drain, and
    // `run` returns the fault so the process exits for its supervisor.
    let fault = commit.fault();
    let mut faulted = commit.fault();
    let stopper = tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            _ = faulted.wait_for(Option::is_some) => {}
        }
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let services = server::Services::build(
        registry.clone(),
        hub.clone(),
        Arc::clone(&store),
        records.clone(),
        &settings,
    )
    .await?;
    let http = metrics_listener.map(|l| {
        let state = metrics::State::new(
            registry.clone(),
            hub.clone(),
            Arc::clone(&settings.feedback_counters),
            Arc::clone(&settings.grpc_stats),
        )
        .with_records(records.idempotency.clone(), records.cache.clone())
        .with_engine(Arc::clone(&settings.engine))
        .with_rls(settings.rls.clone())
        .with_auth(Arc::clone(&auth))
        .with_json(services.json());
        tokio::spawn(metrics::serve(
            l,
            tls.clone(),
            config.caps.max_connections,
            config.caps.header_timeout,
            state,
            config.shutdown_grace,
            stopped(stop_rx.clone()),
        ))
    });
    let res = server::run(listener, services, settings, stopped(stop_rx)).await;
    stopper.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    // Idempotent; ends the dashboards' feeds even when the gRPC server died on its own.
    hub.close();
    sweeper.abort();
    for s in record_sweepers {
        s.abort();
        // Joined, not just aborted: a sweeper holds the store until its task is dropped.
        let _ = s.await;
    }
    // After a store fault nothing more can be made durable, and sled's flush may wait for
    // ever on a latched I/O error: keep nothing at shutdown, leave the flusher (and the
    // store it holds) to the process's exit.
    let faulted = fault.borrow().is_some();
    if let Some((task, registry, store)) = learned {
        task.abort();
        let _ = task.await;
        if !faulted {
            let kept =
                tokio::task::spawn_blocking(move || learned::persist(&registry, store.as_ref()))
                    .await?;
            if let Err(error) = kept {
                tracing::warn!(%error, "keeping learned limits at shutdown failed");
            }
        }
    }
    if !faulted {
        // Flushes any last batch and drops the flusher's handle on the store.
        tokio::task::spawn_blocking(move || commit.close()).await?;
    }
    let http_res = match http {
        // Bounded by its own grace period.
        Some(task) => task
            .await
            .map_err(metrics::MetricsError::from)
            .and_then(|r| r),
        None => Ok(()),
    };
    let fault = fault.borrow().clone();
    if let Some(cause) = fault {
        return Err(AppError::StoreFault(cause.to_string()));
    }
    res?;
    http_res?;
    Ok(())
}

/// Re-read the principals file and the TLS files on every SIGHUP (cert-manager rotates
/// certificates in place). A file that does not load leaves what is in force, and says why.
#[cfg(unix)]
fn spawn_reloader(
    auth: Arc<crate::auth::Auth>,
    tls: Option<Arc<crate::tls::Tls>>,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: no reloads");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match auth.reload() {
                Ok(n) => tracing::info!(credentials = n, "principals reloaded"),
                Err(error) => tracing::error!(%error, "principals not reloaded; the old ones stay"),
            }
            if let Some(t) = &tls {
                match t.reload() {
                    Ok(()) => tracing::info!("TLS certificates reloaded"),
                    Err(error) => {
                        tracing::error!(%error, "TLS certificates not reloaded; the old ones stay");
                    }
                }
            }
        }
    }))
}

/// No SIGHUP here: nothing reloads.
#[cfg(not(unix))]
fn spawn_reloader(
    _auth: Arc<crate::auth::Auth>,
    _tls: Option<Arc<crate::tls::Tls>>,
) -> Option<tokio::task::JoinHandle<()>> {
    None
}

/// Opens the idempotency records and the cache (rebuilding its index) over `store`, with
/// one group-commit flusher for both.
async fn open_records(
    config: &Config,
    store: Arc<dyn RecordStore>,
    clock: Arc<dyn Clock>,
) -> Result<(Records, GroupCommit), AppError> {
    let commit = GroupCommit::start(Arc::clone(&store))?;
    let idempotency = Idempotency::new(
        Arc::clone(&store),
        commit.clone(),
        config.idempotency.clone(),
    );
    let (c, settings, caps) = (commit.clone(), config.cache.clone(), config.caps.clone());
    // Both count what the store holds: the cache its index, idempotency each tenant's use.
    let opened = tokio::task::spawn_blocking(move || {
        let idempotency = idempotency.with_caps(caps)?;
        Ok::<_, AppError>((idempotency, Cache::open(store, c, settings)?))
    })
    .await
    .map_err(AppError::from)
    .and_then(|r| r);
    let (idempotency, cache) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // Release the store before reporting: the flusher thread owns a handle on it.
            let closing = commit.clone();
            tokio::task::spawn_blocking(move || closing.close()).await?;
            return Err(e);
        }
    };
    let records = Records {
        idempotency,
        cache,
        clock,
    };
    Ok((records, commit))
}

fn template(config: &Config) -> Result<Option<ResourceDef>, AppError> {
    Ok(match &config.default_resource {
        Some(t) => {
            let mut t = t.clone();
            "default".clone_into(&mut t.name);
            Some(convert::resource_from_proto(&t, "default_resource")?)
        }
        None => None,
    })
}

/// A stored definition, decoded and validated.
fn decode_resource(bytes: &[u8]) -> Result<ResourceDef, String> {
    proto::Resource::decode(bytes)
        .map_err(|e| e.to_string())
        .and_then(|r| convert::resource_from_proto(&r, "resource").map_err(|e| e.to_string()))
}

/// The shared store, waiting for Redis instead of failing while it does not answer: a
/// replica started before its Redis keeps trying (no crash loop). Bad settings still fail.
async fn open_redis_store(r: &cluster::Settings) -> Result<RedisStore, AppError> {
    let mut retry = cluster::startup_retry();
    loop {
        let (url, prefix, timeout, tls) =
            (r.url.clone(), r.prefix.clone(), r.op_timeout, r.tls.clone());
        match tokio::task::spawn_blocking(move || {
            RedisStore::open_tls(&url, &prefix, timeout, &tls)
        })
        .await?
        {
            Err(StoreError::Open {
                hint: OpenHint::Unreachable,
                source,
                ..
            }) => {
                tracing::warn!(error = %source, retry_in = ?retry.next(), "redis not reachable yet");
                retry.wait().await;
            }
            other => return Ok(other?),
        }
    }
}

/// [`build_registry`] on the shared store, waiting for Redis instead of failing: a replica
/// started before its Redis keeps trying (no crash loop) and serves once it answers.
async fn load_with_retry(
    config: &Config,
    store: &Arc<dyn ResourceStore>,
    hub: &Hub,
) -> Result<Registry, AppError> {
    let mut retry = cluster::startup_retry();
    loop {
        let c = config.clone();
        let s = Arc::clone(store);
        let h = hub.clone();
        match tokio::task::spawn_blocking(move || build_registry(&c, s.as_ref(), h)).await? {
            Err(AppError::Store(e)) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in = ?retry.next(), "redis not reachable yet");
                retry.wait().await;
            }
            other => return other,
        }
    }
}

/// Keeps a replica's definitions (and its local-fallback shares) in step with Redis: one
/// name when a change message arrives, every stored one periodically. A full read adds and
/// updates but never deletes: a Redis restarted without persistence holds no definitions,
/// and reading that as "all deleted" would take every resource away from every replica.
/// Deletions arrive by their change message.
struct Definitions {
    registry: Registry,
    fallback: Registry,
    store: Arc<dyn ResourceStore>,
    share: u32,
}

impl Definitions {
    /// Apply `def` (stored under `name`) if it differs from what this replica has.
    fn apply(&self, name: &str, bytes: &[u8]) -> bool {
        match decode_resource(bytes) {
            Ok(def) => {
                // Each compared first: putting an equal definition would start its buckets
                // afresh. (The replica that took the PutResource has it in its registry
                // already, but its fallback share still needs it.)
                let mut changed = false;
                let share = cluster::fallback_share(&def, self.share);
                if self.fallback.get(name).as_deref() != Some(&share) {
                    self.fallback.put(share);
                    changed = true;
                }
                if self.registry.get(name).as_deref() != Some(&def) {
                    self.registry.put(def);
                    changed = true;
                }
                changed
            }
            Err(error) => {
                tracing::warn!(resource = %name, %error, "stored resource skipped");
                false
            }
        }
    }

    /// A change message for `name`: defined, redefined or deleted.
    fn one(&self, name: &str) {
        match self.store.list_resources() {
            Ok(all) => match all.into_iter().find(|(n, _)| n == name) {
                Some((_, bytes)) => {
                    self.apply(name, &bytes);
                }
                None => {
                    self.registry.delete(name);
                    self.fallback.delete(name);
                }
            },
            Err(error) => {
                tracing::warn!(resource = %name, %error, "cannot reload a changed resource");
            }
        }
    }

    /// Read every stored definition again and converge on it.
    fn all(&self) {
        let stored = match self.store.list_resources() {
            Ok(all) => all,
            Err(error) => {
                tracing::debug!(%error, "definition resync skipped: store unreachable");
                return;
            }
        };
        let changed = stored
            .iter()
            .filter(|(name, bytes)| self.apply(name, bytes))
            .count();
        if changed > 0 {
            tracing::info!(changed, "definitions resynced from the shared store");
        }
    }
}

/// The cluster engine, with its local-fallback registry (a share of every limit) kept in
/// step with the definitions, which any replica may change.
fn start_cluster(
    config: &Config,
    settings: &cluster::Settings,
    registry: &Registry,
    hub: &Hub,
    store: &Arc<dyn ResourceStore>,
) -> Result<Arc<Cluster>, AppError> {
    let share = settings.fallback_share;
    if let Some(t) = template(config)? {
        cluster::check_exact(&t)
            .map_err(|e| AppError::Cluster(format!("the default resource: {e}")))?;
    }
    let fallback = Registry::new(
        Arc::new(SystemClock::new()),
        template(config)?.map(|t| cluster::fallback_share(&t, share)),
        Hub::new(),
    )
    .with_caps(config.caps.clone());
    for def in registry.list("", "", usize::MAX) {
        // A definition the scripts cannot hold exactly fails the start, naming it.
        cluster::check_exact(&def)
            .map_err(|e| AppError::Cluster(format!("resource {:?}: {e}", def.name)))?;
        fallback.put(cluster::fallback_share(&def, share));
    }
    let c = Cluster::start(
        settings.clone(),
        registry.clone(),
        fallback.clone(),
        hub.clone(),
        Arc::clone(registry.clock()),
    )
    .map_err(|e| AppError::Cluster(e.to_string()))?;
    let sync = Arc::new(Definitions {
        registry: registry.clone(),
        fallback,
        store: Arc::clone(store),
        share,
    });
    let on_change = Arc::clone(&sync);
    c.on_resource_change(move |name| {
        let (sync, name) = (Arc::clone(&on_change), name.to_owned());
        tokio::task::spawn_blocking(move || sync.one(&name));
    });
    // A change message lost on the way (pub/sub is at most once) would leave this replica
    // with other limits than the rest indefinitely: every definition is read again
    // periodically and whenever Redis comes back.
    let mut up = c.up();
    let every = settings.resync_every;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = up.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*up.borrow_and_update() {
                        continue;
                    }
                }
            }
            let sync = Arc::clone(&sync);
            let _ = tokio::task::spawn_blocking(move || sync.all()).await;
        }
    });
    Ok(c)
}

fn build_registry(
    config: &Config,
    store: &dyn ResourceStore,
    hub: Hub,
) -> Result<Registry, AppError> {
    let registry = Registry::new(Arc::new(SystemClock::new()), template(config)?, hub)
        .with_caps(config.caps.clone());
    let mut loaded = 0usize;
    for (name, bytes) in store.list_resources()? {
        // A stored definition the current version rejects is skipped loudly rather than
        // failing start-up: the others still serve, and PutResource can fix it.
        match decode_resource(&bytes) {
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
    // Envoy rate limit rules: each limit is a resource of the rules' tenant, defined from
    // the YAML at every start (like [[resources]], they win over a stored definition).
    let mut rls_rules = 0usize;
    if let Some(rls) = &config.rls {
        for mut r in rls.definitions() {
            r.name = crate::auth::tenant::qualify(&rls.tenant, &r.name).into_owned();
            let def = convert::resource_from_proto(&r, "rls")?;
            registry.put(def);
            rls_rules += 1;
        }
    }
    tracing::info!(
        stored = loaded,
        from_config = config.resources.len(),
        rls = rls_rules,
        "resources loaded"
    );
    Ok(registry)
}
