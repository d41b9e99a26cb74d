//! The HTTP side of permitd, on `--metrics-listen`: Prometheus metrics and the live
//! dashboard.
//!
//! Routes (GET only; any other path is 404):
//! - `/metrics`: the Prometheus text exposition ([`prom`]);
//! - `/`: the dashboard, one self-contained page (inline CSS and JS, compiled into the
//!   binary, nothing fetched from the internet);
//! - `/events`: the page's feed, server-sent events ([`events`]);
//! - `/events/partitions?resource=R&prefix=P`: the page's partition search (JSON). Under
//!   `/events` so the feed's token cookie reaches it.
//!
//! [`serve`] has the gRPC server's shape: a bound listener and a shutdown future; after the
//! signal, open connections get at most the grace period to finish (the `/events` streams
//! end by themselves when the quota hub closes) before the server is dropped.

pub mod events;
pub mod prom;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::feedback::apply::Counters;
use crate::permits::Registry;
use crate::server::grpc_stats::GrpcStats;
use crate::watch::Hub;

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What the HTTP handlers read. Cheap to clone.
#[derive(Clone)]
pub struct State {
    /// The live buckets and per-resource counters.
    pub registry: Registry,
    /// Bucket change announcements.
    pub hub: Hub,
    /// Header feedback counters.
    pub feedback: Arc<Counters>,
    /// gRPC request counters.
    pub grpc: Arc<GrpcStats>,
    /// Idempotency and cache counters, when those services run.
    pub records: Option<(crate::idempotency::Idempotency, crate::cache::Cache)>,
    /// What holds the buckets: the registry itself, or Redis (then the views over every
    /// partition are not served here).
    pub engine: Arc<dyn crate::engine::PermitEngine>,
    /// Envoy's rate limit service, when configured (its per-value counts).
    pub rls: Option<Arc<crate::rls::Rls>>,
    /// Who may read (every route but the static page needs a viewer).
    pub auth: Arc<crate::auth::Auth>,
    /// The counters' last five minutes, for the charts of a page opened now.
    pub history: Arc<events::History>,
    /// Connect (HTTP/JSON) over the gRPC stack, when the server serves it here.
    pub json: Option<crate::server::Json>,
    /// Pages connected to `/events` now.
    clients: Arc<AtomicU64>,
    /// Pages connected to `/events` since the start.
    connections: Arc<AtomicU64>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    /// The state over the server's registry, hub and counters.
    #[must_use]
    pub fn new(
        registry: Registry,
        hub: Hub,
        feedback: Arc<Counters>,
        grpc: Arc<GrpcStats>,
    ) -> Self {
        Self {
            engine: Arc::new(registry.clone()),
            registry,
            hub,
            feedback,
            grpc,
            records: None,
            rls: None,
            auth: Arc::new(crate::auth::Auth::off()),
            history: Arc::default(),
            json: None,
            clients: Arc::default(),
            connections: Arc::default(),
        }
    }

    /// Also export the idempotency and cache counters.
    #[must_use]
    pub fn with_records(
        mut self,
        idempotency: crate::idempotency::Idempotency,
        cache: crate::cache::Cache,
    ) -> Self {
        self.records = Some((idempotency, cache));
        self
    }

    /// Read bucket state through `engine` (the Redis engine's, when clustered).
    #[must_use]
    pub fn with_engine(mut self, engine: Arc<dyn crate::engine::PermitEngine>) -> Self {
        self.engine = engine;
        self
    }

    /// Export the per-value counts of RLS rules marked `detailed_metric`.
    #[must_use]
    pub fn with_rls(mut self, rls: Option<Arc<crate::rls::Rls>>) -> Self {
        self.rls = rls;
        self
    }

    /// Serve Connect calls (`POST /<service>/<method>`) through `json`.
    #[must_use]
    pub fn with_json(mut self, json: crate::server::Json) -> Self {
        self.json = Some(json);
        self
    }

    /// Authenticate HTTP callers with `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: Arc<crate::auth::Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// The caller of an HTTP request, or the answer that refuses it (401 with a
    /// `WWW-Authenticate` challenge, 403, or 400 for a bad tenant header).
    fn caller(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<&crate::tls::Peer>,
        feed: bool,
    ) -> Result<Arc<crate::auth::Caller>, Box<Response>> {
        let certs = peer.and_then(|p| p.certs.as_deref());
        // The dashboard's feed (EventSource sends no header) carries the token in a cookie.
        let cookie = (headers.get(header::AUTHORIZATION).is_none() && feed)
            .then(|| token_cookie(headers))
            .flatten();
        let authorization = match &cookie {
            Some(t) => Some(t.as_bytes()),
            None => headers
                .get(header::AUTHORIZATION)
                .map(axum::http::HeaderValue::as_bytes),
        };
        self.auth
            .authenticate(
                authorization,
                headers
                    .get(crate::auth::TENANT_HEADER)
                    .map(axum::http::HeaderValue::as_bytes),
                certs.map(Vec::as_slice),
            )
            .map_err(|s| {
                let code = match s.code() {
                    tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                Box::new(
                    (
                        code,
                        [(header::WWW_AUTHENTICATE, "Bearer realm=\"permitd\"")],
                        format!("{}\n", s.message()),
                    )
                        .into_response(),
                )
            })
    }

    /// What `caller` may see of the metrics: everything for an operator, else its tenant.
    fn view(&self, caller: &crate::auth::Caller, dashboard: bool) -> prom::View {
        let on = self.auth.mode() != crate::auth::Mode::None;
        prom::View {
            tenant: (on && (dashboard || !caller.operator)).then(|| Arc::clone(&caller.tenant)),
            tenant_label: on,
        }
    }

    /// Pages connected to `/events` now.
    #[must_use]
    pub fn dashboard_clients(&self) -> u64 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Pages connected to `/events` since the start.
    #[must_use]
    pub fn dashboard_connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn client_connected(&self) -> ClientGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(Arc::clone(&self.clients))
    }
}

/// Counts one connected page while it lives.
#[derive(Debug)]
struct ClientGuard(Arc<AtomicU64>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the HTTP server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Accepting or serving failed.
    #[error("metrics server")]
    Io(#[from] std::io::Error),
    /// The server task panicked.
    #[error("metrics server task")]
    Join(#[from] tokio::task::JoinError),
}

/// The routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/events/partitions", get(partitions))
        .route("/{service}/{method}", axum::routing::any(connect))
        .fallback(not_found)
        .with_state(state)
}

/// Serve until `shutdown` resolves, then let open connections finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<crate::tls::Tls>>,
    max_connections: usize,
    header_timeout: Duration,
    state: State,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MetricsError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = tls.is_some(), "metrics and dashboard listening");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stop_rx.await;
    };
    // One sampler of the charts' history for every page.
    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(events::TOTALS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                state.history.sample(&state.registry);
            }
        })
    };
    let _sampler = AbortOnDrop(sampler);
    let app = router(state);
    let mut task = match tls {
        Some(tls) => {
            let listener = crate::tls::HttpListener::new(listener, tls, max_connections)?;
            tokio::spawn(crate::listen::serve_http(
                listener,
                app,
                header_timeout,
                stopped,
            ))
        }
        None => {
            let listener = crate::listen::HttpListener::new(listener, max_connections)?;
            tokio::spawn(crate::listen::serve_http(
                listener,
                app,
                header_timeout,
                stopped,
            ))
        }
    };
    tokio::select! {
        res = &mut task => return Ok(res?),
        () = shutdown => {}
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut task).await {
        Ok(res) => res?,
        Err(_) => {
            tracing::warn!("metrics connections outlived the grace period; closing them");
            task.abort();
        }
    }
    Ok(())
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The page loads nothing from elsewhere; say so, so a browser enforces it.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; \
                 script-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// `Bearer <token>` of the dashboard's `permitd_token` cookie, if any.
fn token_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("permitd_token="))
        .map(|t| format!("Bearer {t}"))
}

/// The peer of a request, as the listener recorded it.
type PeerInfo = axum::extract::ConnectInfo<crate::tls::Peer>;

async fn metrics(
    axum::extract::State(state): axum::extract::State<State>,
    peer: PeerInfo,
    headers: axum::http::HeaderMap,
) -> Response {
    let caller = match state.caller(&headers, Some(&peer.0), false) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let view = state.view(&caller, false);
    (
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        prom::render(&state, &view),
    )
        .into_response()
}

async fn events(
    axum::extract::State(state): axum::extract::State<State>,
    peer: PeerInfo,
    headers: axum::http::HeaderMap,
) -> Response {
    let caller = match state.caller(&headers, Some(&peer.0), true) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let view = state.view(&caller, true);
    match events::stream(&state, view) {
        Ok(sse) => ([(header::CACHE_CONTROL, "no-store")], sse).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn partitions(
    axum::extract::State(state): axum::extract::State<State>,
    peer: PeerInfo,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let caller = match state.caller(&headers, Some(&peer.0), true) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let view = state.view(&caller, true);
    match events::partitions_json(&state, &view, uri.query().unwrap_or("")) {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json,
        )
            .into_response(),
        Err((code, msg)) => (code, msg).into_response(),
    }
}

/// A Connect call: run through the gRPC stack, which authenticates it as a gRPC call (the
/// header, or the connection's client certificate; never the dashboard's cookie).
async fn connect(
    axum::extract::State(state): axum::extract::State<State>,
    peer: PeerInfo,
    mut req: axum::extract::Request,
) -> Response {
    // Paths that are no method stay the listener's 404s.
    let Some(json) = state
        .json
        .as_ref()
        .filter(|j| j.connect.knows(req.uri().path()))
    else {
        return not_found().await;
    };
    req.extensions_mut().insert(peer.0);
    json.connect
        .serve(json.rpc.clone(), req)
        .await
        .map(axum::body::Body::new)
}

/// Aborts a task when dropped (whichever way `serve` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
