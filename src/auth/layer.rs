//! The one place a gRPC call is authenticated: a tower layer in front of every service.
//! It reads the `authorization` metadata and the TLS client certificate, puts the
//! [`Caller`] in the request's extensions, or answers UNAUTHENTICATED itself. Health and
//! reflection stay open: probes and tools need them, and they say nothing about a tenant.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Auth, Caller, TENANT_HEADER};
use crate::server::shed::CallFuture;

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
            // With auth off there is nothing to check: no shared counter to bump per call
            // (the service is cloned for every request).
            auth: (self.0.mode() != super::Mode::None).then(|| Arc::clone(&self.0)),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
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
    // The gRPC port's connections carry tonic's record; Connect calls from the HTTP
    // listener carry that listener's.
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .or_else(|| {
            extensions
                .get::<crate::tls::Peer>()
                .and_then(|p| p.certs.clone())
        });
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
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CallFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        // With auth off the handlers know every caller already: nothing to put in the call.
        if let Some(auth) = &self.auth
            && !OPEN.iter().any(|p| path.starts_with(p))
        {
            match authenticate_parts(auth, req.headers(), req.extensions()) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(status) => {
                    tracing::debug!(path, reason = status.message(), "call refused");
                    return CallFuture::answer(status.into_http::<ResBody>());
                }
            }
        }
        CallFuture::pass(self.inner.call(req))
    }
}
