//! The gRPC edge: tonic services that convert protobuf <-> domain and map errors to
//! statuses, plus health, reflection, per-method request metrics ([`grpc_stats`]), limits
//! and graceful shutdown.
//!
//! [`Services::build`] makes the services once; [`run`] serves them on the gRPC port (gRPC,
//! and Connect through [`connect`]), and [`Services::json`] hands the same stack to the HTTP
//! listener's Connect routes.
//!
//! [`run`] takes a bound listener and a shutdown future (the mini-redis shape), so `main`
//! and the tests differ only in what they pass in. Shutdown: health turns NOT_SERVING at
//! once, queued waiters are answered UNAVAILABLE, then in-flight calls get at most
//! `shutdown_grace` to finish before the server is dropped; tonic's own shutdown has no
//! drain bound (hyperium/tonic#1820), so a long-lived stream could otherwise block exit.

pub mod batch;
pub mod cache;
pub mod connect;
pub mod convert;
pub mod error;
pub mod grpc_stats;
pub mod idempotency;
pub mod permits;
pub mod quotas;
pub mod rls;
pub mod shed;
pub mod summaries;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::clock::Clock;
use crate::permits::Registry;
use crate::proto::{
    self, cache_server::CacheServer, idempotency_server::IdempotencyServer,
    permits_server::PermitsServer, quotas_server::QuotasServer,
};
use crate::store::ResourceStore;
use crate::watch::Hub;

/// Server knobs (validated by the config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest decoded request message.
    pub max_message_bytes: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Bound on the drain at shutdown.
    pub shutdown_grace: Duration,
    /// Upstream statuses worth a retry.
    pub retryable_status: Vec<u32>,
    /// Header feedback counters (shared with metrics).
    pub feedback_counters: Arc<crate::feedback::apply::Counters>,
    /// Request counts and latencies per method (shared with metrics).
    pub grpc_stats: Arc<grpc_stats::GrpcStats>,
    /// What decides permits: the embedded registry, or the Redis engine.
    pub engine: Arc<dyn crate::engine::PermitEngine>,
    /// Who may call: every call passes through it once ([`crate::auth::layer`]).
    pub auth: Arc<crate::auth::Auth>,
    /// TLS on the listener; `None`: plaintext.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Envoy's rate limit service, when configured.
    pub rls: Option<Arc<crate::rls::Rls>>,
}

/// Server failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Building reflection from the descriptor sets failed (a build bug).
    #[error("reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The Connect method table from the descriptor sets failed (a build bug).
    #[error("connect")]
    Connect(#[from] connect::ConnectError),
    /// The transport failed.
    #[error("transport")]
    Transport(#[from] tonic::transport::Error),
    /// The server task panicked.
    #[error("server task")]
    Join(#[from] tokio::task::JoinError),
}

/// Room for the rest of a request around its capped payload (headers, metadata, names).
const ENVELOPE_BYTES: usize = 64 * 1024;

/// The Permits service's name as health checks ask for it.
const PERMITS_SERVICE: &str = "permitd.v1.Permits";

/// The domain objects behind the Idempotency and Cache services, and the clock they take
/// `now` from.
#[derive(Debug, Clone)]
pub struct Records {
    /// Idempotency records.
    pub idempotency: crate::idempotency::Idempotency,
    /// The result cache.
    pub cache: crate::cache::Cache,
    /// Time source (Unix ms for records that outlive the process).
    pub clock: Arc<dyn Clock>,
}

/// The gRPC stack as one in-process service: what the HTTP listener's Connect routes call.
pub type Rpc = tower::util::BoxCloneSyncService<
    http::Request<connect::Body>,
    http::Response<connect::Body>,
    std::convert::Infallible,
>;

/// Connect over the gRPC stack, for the HTTP listener.
#[derive(Clone)]
pub struct Json {
    /// The method table.
    pub connect: Arc<connect::Connect>,
    /// The stack calls run through (stats, shedding, auth, handlers).
    pub rpc: Rpc,
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Json").finish_non_exhaustive()
    }
}

/// Every service, built once for both listeners.
pub struct Services {
    routes: tonic::service::Routes,
    health: tonic_health::server::HealthReporter,
    connect: Arc<connect::Connect>,
    stats: grpc_stats::GrpcStatsLayer,
    shed: shed::ShedLayer,
    auth: crate::auth::layer::AuthLayer,
    registry: Registry,
    hub: Hub,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

use tonic::codegen::http;

impl Services {
    /// Connect over the same stack the gRPC port serves: the same layer instances, so one
    /// in-flight cap and one set of request metrics cover both listeners.
    #[must_use]
    pub fn json(&self) -> Json {
        let stack = tower::ServiceBuilder::new()
            .layer(self.stats.clone())
            .layer(self.shed.clone())
            .layer(self.auth.clone())
            .service(self.routes.clone().prepare());
        Json {
            connect: Arc::clone(&self.connect),
            rpc: tower::util::BoxCloneSyncService::new(stack),
        }
    }

    /// Build every service over the domain objects.
    ///
    /// # Errors
    /// The build's descriptor sets do not decode (a build bug).
    pub async fn build(
        registry: Registry,
        hub: Hub,
        store: Arc<dyn ResourceStore>,
        records: Records,
        settings: &Settings,
    ) -> Result<Self, ServerError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let max = settings.max_message_bytes;
        let permits = PermitsServer::new(permits::PermitsService::new(
            registry.clone(),
            crate::backoff::Retryable::new(settings.retryable_status.iter().copied()),
            Arc::clone(&settings.feedback_counters),
            Arc::clone(&settings.engine),
            Arc::clone(&settings.auth),
        ))
        .max_decoding_message_size(max);
        let rls_server = settings.rls.as_ref().map(|rls| {
        crate::proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer::new(
            rls::RlsService::new(
                Arc::clone(rls),
                registry.clone(),
                Arc::clone(&settings.engine),
                Arc::clone(&settings.auth),
            ),
        )
        .max_decoding_message_size(max)
    });
        if rls_server.is_some() {
            health
            .set_serving::<crate::proto::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer<rls::RlsService>>()
            .await;
        }
        let quotas = QuotasServer::new(quotas::QuotasService::new(
            registry.clone(),
            hub.clone(),
            store,
            Arc::clone(&settings.engine),
            Arc::clone(&settings.auth),
        ))
        .max_decoding_message_size(max);
        // A capped payload (a result, a value) just over its cap must reach the domain to be
        // refused as INVALID_ARGUMENT naming the field, so these decode a little more.
        let result_cap = records.idempotency.settings().max_result_bytes;
        let value_cap = records.cache.settings().max_value_bytes;
        let idempotency = IdempotencyServer::new(idempotency::IdempotencyService::new(
            records.idempotency,
            Arc::clone(&records.clock),
            Arc::clone(&settings.auth),
        ))
        .max_decoding_message_size(max.max(result_cap.saturating_add(ENVELOPE_BYTES)));
        let cache = CacheServer::new(cache::CacheService::new(
            records.cache,
            records.clock,
            Arc::clone(&settings.auth),
        ))
        .max_decoding_message_size(max.max(value_cap.saturating_add(ENVELOPE_BYTES)));

        health
            .set_serving::<PermitsServer<permits::PermitsService>>()
            .await;
        health
            .set_serving::<QuotasServer<quotas::QuotasService>>()
            .await;
        health
            .set_serving::<IdempotencyServer<idempotency::IdempotencyService>>()
            .await;
        health
            .set_serving::<CacheServer<cache::CacheService>>()
            .await;
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(permits)
            .add_service(quotas)
            .add_service(idempotency)
            .add_service(cache);
        if let Some(rls) = rls_server {
            routes.add_service(rls);
        }
        let caps = registry.caps().clone();
        let grown = |cap: usize| max.max(cap.saturating_add(ENVELOPE_BYTES));
        let connect = connect::Connect::new(
            &[
                proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ],
            |service| match service {
                "permitd.v1.Idempotency" => grown(result_cap),
                "permitd.v1.Cache" => grown(value_cap),
                _ => max,
            },
            caps.request_timeout,
        )?;
        Ok(Self {
            routes: routes.routes(),
            health,
            connect: Arc::new(connect),
            stats: settings.grpc_stats.layer(),
            shed: shed::ShedLayer::new(caps.max_in_flight),
            auth: crate::auth::layer::AuthLayer(Arc::clone(&settings.auth)),
            registry,
            hub,
        })
    }
}

/// Serve `services` until `shutdown` resolves, then drain for at most
/// `settings.shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    services: Services,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let Services {
        routes,
        health,
        connect,
        stats,
        shed,
        auth,
        registry,
        hub,
    } = services;
    // Failing closed, a replica that cannot reach Redis can serve nothing: say so, so load
    // balancers route around it until it reconnects.
    let follow = settings.engine.serving().map(|mut up| {
        let health = health.clone();
        tokio::spawn(async move {
            loop {
                let status = if *up.borrow_and_update() {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                health.set_service_status("", status).await;
                health.set_service_status(PERMITS_SERVICE, status).await;
                if up.changed().await.is_err() {
                    return;
                }
            }
        })
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let caps = registry.caps().clone();
    // HTTP/1.1 too: Connect callers (curl, n8n, browsers) may not speak HTTP/2.
    let router = Server::builder()
        .timeout(caps.request_timeout)
        .accept_http1(true)
        .layer(connect::ConnectLayer(connect))
        .layer(stats)
        .layer(shed)
        .layer(auth)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_routes(routes);
    let stopped = async {
        let _ = stop_rx.await;
    };
    let mut server = match &settings.tls {
        Some(tls) => {
            use tokio_stream::StreamExt as _;
            let accepted = crate::tls::accept(
                listener,
                Arc::clone(tls),
                crate::tls::Alpn::H2,
                settings.max_connections,
            );
            let incoming =
                tokio_stream::wrappers::ReceiverStream::new(accepted).map(move |(stream, _)| {
                    Ok::<_, std::io::Error>(crate::listen::FirstBytes::new(
                        stream,
                        caps.header_timeout,
                    ))
                });
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
        None => {
            use tokio_stream::StreamExt as _;
            let accepted = crate::listen::accept(listener, settings.max_connections);
            let incoming =
                tokio_stream::wrappers::ReceiverStream::new(accepted).map(move |(stream, _)| {
                    Ok::<_, std::io::Error>(crate::listen::FirstBytes::new(
                        stream,
                        caps.header_timeout,
                    ))
                });
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    tracing::info!("serving");

    tokio::select! {
        // The transport died on its own (it should not): report it.
        res = &mut server => return Ok(res??),
        () = shutdown => {}
    }
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down");
    if let Some(f) = follow {
        f.abort();
    }
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<PermitsServer<permits::PermitsService>>()
        .await;
    health
        .set_not_serving::<QuotasServer<quotas::QuotasService>>()
        .await;
    health
        .set_not_serving::<IdempotencyServer<idempotency::IdempotencyService>>()
        .await;
    health
        .set_not_serving::<CacheServer<cache::CacheService>>()
        .await;
    registry.close();
    // Watch streams send a final UNAVAILABLE and end, so the drain is not held up by them.
    hub.close();
    let _ = stop_tx.send(());
    match tokio::time::timeout(settings.shutdown_grace, &mut server).await {
        Ok(res) => res??,
        Err(_) => {
            tracing::warn!("drain exceeded the grace period; closing remaining calls");
            server.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}
