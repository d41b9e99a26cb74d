//! gRPC request counts and latencies per method, for `/metrics`: a tower layer on the tonic
//! server that counts each request under its `:path` and times it to the response head.
//!
//! Labels stay bounded: only the methods this server serves (read from the descriptor sets
//! it registers, so the list never drifts from the proto) are counted by name; any other
//! path (a typo, a scanner) is counted as [`OTHER`]. The permit path pays two relaxed atomic
//! adds and one hash lookup. For a server-streaming method (Watch) the time is to the
//! stream's start, not its end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::codegen::http;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The method label of every path the server does not serve.
pub const OTHER: &str = "other";

/// Counters of one method.
#[derive(Debug, Default)]
pub struct MethodStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Responses per bucket of [`LATENCY_BOUNDS`] (not cumulative), plus one for +Inf.
    pub buckets: [AtomicU64; 17],
    /// Sum of the response times, in nanoseconds.
    pub sum_ns: AtomicU64,
    /// Responses timed.
    pub responses: AtomicU64,
}

impl MethodStats {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.responses.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-method counters of the gRPC server. Shared by the layer and `/metrics`.
#[derive(Debug)]
pub struct GrpcStats {
    /// (path, counters), in path order, [`OTHER`] last: a path is found by binary search
    /// (a few comparisons of short strings, no hashing on the request path).
    methods: Vec<(String, MethodStats)>,
}

impl Default for GrpcStats {
    fn default() -> Self {
        Self::served()
    }
}

impl GrpcStats {
    /// Counters for these method paths (`/package.Service/Method`) plus [`OTHER`].
    #[must_use]
    pub fn new(paths: impl IntoIterator<Item = String>) -> Self {
        let mut paths: Vec<String> = paths.into_iter().collect();
        paths.sort();
        paths.dedup();
        paths.push(OTHER.to_owned());
        Self {
            methods: paths
                .into_iter()
                .map(|p| (p, MethodStats::default()))
                .collect(),
        }
    }

    /// Counters for every method the server registers: permitd's services, health and
    /// reflection (both versions).
    #[must_use]
    pub fn served() -> Self {
        let sets = [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        Self::new(sets.into_iter().flat_map(method_paths))
    }

    /// Index of a request path's counters ([`OTHER`]'s for an unknown one).
    fn index_of(&self, path: &str) -> usize {
        let other = self.methods.len() - 1;
        self.methods[..other]
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .unwrap_or(other)
    }

    /// The counters of a request path ([`OTHER`]'s for an unknown one).
    #[cfg(test)]
    fn slot(&self, path: &str) -> &MethodStats {
        &self.methods[self.index_of(path)].1
    }

    /// Every method with its counters, [`OTHER`] last.
    pub fn methods(&self) -> impl Iterator<Item = (&str, &MethodStats)> {
        self.methods.iter().map(|(p, s)| (p.as_str(), s))
    }

    /// The layer to add to the tonic server.
    #[must_use]
    pub fn layer(self: &Arc<Self>) -> GrpcStatsLayer {
        GrpcStatsLayer(Arc::clone(self))
    }
}

/// `/package.Service/Method` of every method in an encoded `FileDescriptorSet` (none when it
/// does not decode: the counts then go to [`OTHER`], which is a metrics nuisance, not an
/// outage).
fn method_paths(encoded: &[u8]) -> Vec<String> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
        tracing::warn!("a descriptor set does not decode; its methods count as \"other\"");
        return Vec::new();
    };
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            let name = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            for method in &service.method {
                out.push(format!("/{name}/{}", method.name()));
            }
        }
    }
    out
}

/// Tower layer counting requests per method; see the module docs.
#[derive(Debug, Clone)]
pub struct GrpcStatsLayer(Arc<GrpcStats>);

impl<S> tower_layer::Layer<S> for GrpcStatsLayer {
    type Service = GrpcStatsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcStatsService {
            inner,
            stats: Arc::clone(&self.0),
        }
    }
}

/// The service the layer wraps the router in.
#[derive(Debug, Clone)]
pub struct GrpcStatsService<S> {
    inner: S,
    stats: Arc<GrpcStats>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for GrpcStatsService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let stats = Arc::clone(&self.stats);
        let i = stats.index_of(req.uri().path());
        stats.methods[i].1.requests.fetch_add(1, Ordering::Relaxed);
        Timed {
            inner: self.inner.call(req),
            stats,
            index: i,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, timed to its end (no allocation per call).
    #[derive(Debug)]
    pub struct Timed<F> {
        #[pin]
        inner: F,
        stats: Arc<GrpcStats>,
        index: usize,
        start: Instant,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.stats.methods[*this.index]
            .1
            .observe(this.start.elapsed());
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The served methods come from the descriptor sets; unknown paths count as "other".
    #[test]
    fn known_methods_and_other() {
        let s = GrpcStats::served();
        let paths: Vec<&str> = s.methods().map(|(p, _)| p).collect();
        assert!(paths.contains(&"/permitd.v1.Permits/AcquirePermit"));
        assert!(paths.contains(&"/permitd.v1.Quotas/Watch"));
        assert!(paths.contains(&"/grpc.health.v1.Health/Check"));
        assert!(paths.contains(&"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
        assert_eq!(paths.last(), Some(&OTHER));
        s.slot("/nope/x").observe(Duration::from_millis(2));
        s.slot("/permitd.v1.Permits/AcquirePermit")
            .observe(Duration::from_secs(60));
        let other = s.slot("/evil").buckets[4].load(Ordering::Relaxed);
        assert_eq!(other, 1);
        let acquire = s.slot("/permitd.v1.Permits/AcquirePermit");
        assert_eq!(acquire.buckets[16].load(Ordering::Relaxed), 1);
        assert_eq!(acquire.sum_ns.load(Ordering::Relaxed), 60_000_000_000);
    }
}
