//! The permit domain: resources and their limits, bucket math, the wait queue, concurrency
//! leases. Pure and synchronous where it can be (`limit`, `bucket`); `registry` adds the
//! async waiting. No tonic, no sled, no redis in here: the server converts to and from the
//! wire, the store persists definitions.

pub mod adaptive;
pub mod answer;
pub mod bucket;
pub mod caps;
mod cost;
pub mod denial;
pub mod id;
pub mod limit;
pub mod registry;
pub mod resource;
pub mod stats;
pub mod summary;

pub use answer::{
    AcquireOutcome, AcquireRequest, Denial, DimensionView, GrantInfo, QuotaView, ResourceMetrics,
    Settlement, Taken,
};
pub(crate) use cost::{never, resolve_actual, resolve_cost};
pub use denial::DenialReason;
pub use registry::Registry;
pub use resource::ResourceDef;

/// Errors of the permit domain.
#[derive(Debug, thiserror::Error)]
pub enum PermitError {
    /// A request field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as named in the proto (`cost.tokens`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such resource.
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    /// A well-formed permit id with no live lease (unknown, expired or released).
    #[error("unknown permit: never granted, already released or lease expired")]
    UnknownPermit,
    /// Not a permit id this server issued.
    #[error("permit_id: malformed")]
    MalformedPermit,
    /// The server is stopping.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The shared state (Redis) cannot be reached and the failure policy is to fail closed:
    /// never reported as "over limit".
    #[error("shared state unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A broken invariant (a bug): logged and answered INTERNAL, never "over limit".
    #[error("internal: {0}")]
    Internal(&'static str),
    /// A cap on what the server holds is reached.
    #[error("{cap} reached: {what} (at most {limit}; raise it in [limits], or per tenant)")]
    Exhausted {
        /// The cap's setting: `max_partitions_per_resource`.
        cap: &'static str,
        /// Its value.
        limit: usize,
        /// What is full, in words.
        what: String,
    },
}
