//! Overload shedding: calls in progress are counted, and past `max_in_flight` a new call is
//! answered RESOURCE_EXHAUSTED at once, naming the cap, instead of queueing behind the ones
//! being served (where it would wait, time out and be retried by a client that already gave
//! up). Health and reflection are never shed: probes must see a live server.
//!
//! A call counts from its headers until its handler answers (a queued AcquirePermit counts
//! while it waits; a Watch stream stops counting once it started: streams have their own
//! cap), so the limit should sit above `max_waiters`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::codegen::http;

/// Paths never shed.
const EXEMPT: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// Sheds calls past `max` in progress at once.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    in_flight: Arc<AtomicUsize>,
    max: usize,
}

impl ShedLayer {
    /// At most `max` calls in progress.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            in_flight: Arc::default(),
            max,
        }
    }
}

impl<S> tower_layer::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`ShedLayer`].
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

/// One call in progress, counted until dropped (answered or cancelled).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Shed<S>
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

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if EXEMPT.iter().any(|p| path.starts_with(p)) {
            return CallFuture::pass(self.inner.call(req));
        }
        let n = &self.layer.in_flight;
        if n.fetch_add(1, Ordering::AcqRel) >= self.layer.max {
            n.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(path, "call shed");
            let status = tonic::Status::resource_exhausted(format!(
                "max_in_flight reached: {} calls in progress on this server; retry with backoff",
                self.layer.max
            ));
            return CallFuture::answer(status.into_http::<ResBody>());
        }
        CallFuture::Pass {
            inner: self.inner.call(req),
            _held: Some(InFlight(Arc::clone(n))),
        }
    }
}

pub use future::CallFuture;

mod future {
    // The macro's projection type has no docs of its own.
    #![allow(missing_docs)]
    use super::{InFlight, http};

    pin_project_lite::pin_project! {
        /// A layer's future: the inner service's (holding whatever the layer counts), or
        /// the layer's own answer. No allocation per call.
        #[project = CallProj]
        pub enum CallFuture<F, B> {
            /// The call runs.
            Pass { #[pin] inner: F, _held: Option<InFlight> },
            /// Answered by the layer (a refusal), once.
            Answer { answer: Option<http::Response<B>> },
        }
    }
}

impl<F, B> CallFuture<F, B> {
    /// The call runs, holding nothing.
    pub fn pass(inner: F) -> Self {
        Self::Pass { inner, _held: None }
    }

    /// The layer answers `res` itself.
    pub fn answer(res: http::Response<B>) -> Self {
        Self::Answer { answer: Some(res) }
    }
}

impl<F, B, E> Future for CallFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            future::CallProj::Pass { inner, .. } => inner.poll(cx),
            future::CallProj::Answer { answer } => match answer.take() {
                Some(res) => Poll::Ready(Ok(res)),
                // Polled again after it was ready: a caller bug; never ready again.
                None => Poll::Pending,
            },
        }
    }
}
