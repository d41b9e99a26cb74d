//! The one place a gRPC call is authenticated: a tower layer in front of every service.
//! It reads the `authorization` metadata and the TLS client certificate, puts the
//! [`Caller`] in the request's extensions, or answers UNAUTHENTICATED itself. Health and
//! reflection stay open: probes and tools need them, and they say nothing about a tenant.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Auth, Caller, TENANT_HEADER};

/// Paths served without credentials.
const OPEN: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// Authenticates every call with `Auth`.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Arc<Auth>);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.0),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

/// Authenticate an HTTP request's head: its headers and, over TLS, the client certificate
/// chain tonic recorded for the connection.
///
/// # Errors
/// As [`Auth::authenticate`].
pub fn authenticate_parts(
    auth: &Auth,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> Result<Arc<Caller>, tonic::Status> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs);
    auth.authenticate(
        headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes),
        headers.get(TENANT_HEADER).map(http::HeaderValue::as_bytes),
        certs.as_deref().map(Vec::as_slice),
    )
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if !OPEN.iter().any(|p| path.starts_with(p)) {
            match authenticate_parts(&self.auth, req.headers(), req.extensions()) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(status) => {
                    tracing::debug!(path, reason = status.message(), "call refused");
                    let res = status.into_http::<ResBody>();
                    return Box::pin(async move { Ok(res) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}
