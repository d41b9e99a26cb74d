//! permitd: one service every worker asks before it calls a rate-limited upstream.
//!
//! # Request flow
//! 1. `Permits.AcquirePermit` ([`server::permits`]) validates the request, then
//!    [`permits::Registry::acquire`] finds the resource's bucket(s) and, under the bucket's
//!    lock, checks every limit (exact integer GCRA, [`permits::limit`]) and the concurrency
//!    slots; it grants (taking the cost and holding a lease), queues the caller (priority,
//!    FIFO, head-of-line) until a release or a timer at the exact ready time wakes it, or
//!    denies with the exact `retry_after`.
//! 2. The worker calls the upstream.
//! 3. `Permits.ReportOutcome` / `ReleasePermit` release the lease, reconcile the real cost
//!    and wake the queue.
//!
//! Around it, `Cache.Get` ([`server::cache`] -> [`cache`]) answers repeated requests
//! without an upstream call, and `Idempotency.Begin` ([`server::idempotency`] ->
//! [`idempotency`]) lets exactly one worker make a call with side effects; each is one
//! atomic read-modify-write of a record in the [`store`], and `Complete` / `Put` are
//! answered once a group-commit flush made them durable.
//!
//! # Module map (dependencies point down)
//! - [`app`]: composition root: opens the store, loads resources, runs the servers.
//! - [`metrics`]: HTTP on `--metrics-listen`: Prometheus `/metrics`, the live dashboard
//!   page and its server-sent events feed.
//! - [`config`]: TOML file + flags -> validated [`config::Config`]. The client
//!   subcommands and the bench drivers are the binary's (`src/cli/`), not the library's.
//! - [`server`]: tonic services, proto <-> domain conversion, error -> status mapping,
//!   health, reflection, shutdown.
//! - [`permits`]: the domain: resources, bucket math, queue, leases. No transport or storage.
//! - [`feedback`]: upstream rate-limit headers (every dialect) -> one typed observation,
//!   and how an observation changes a bucket; [`backoff`]: retry delays and advice.
//! - [`idempotency`], [`cache`]: idempotency records and the result cache over the store's
//!   record trait (state machine, TTLs, caps, eviction); [`sweeper`] removes what expired.
//! - [`watch`]: the quota-update hub behind `Quotas.Watch`.
//! - [`learned`]: what buckets learned (limits, adaptive rates, cooldowns) kept in the store
//!   across restarts.
//! - [`cluster`]: the permit engine of several replicas over Redis: one Lua script per
//!   decision on Redis time, pub/sub wake-ups and fan-out, the failure policy.
//! - [`store`]: persistence behind traits (sled on disk, Redis shared by replicas, memory
//!   for tests), group commit. The tests' process helpers (redis-server, a throwaway
//!   CA) are the dev-only crate `crates/testkit`.
//! - [`clock`]: monotonic time the domain is given, never reads itself.

/// Generated protobuf and gRPC code.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("permitd.v1");
    /// Envoy's rate limit service (RLS v3) and the messages it carries, in Envoy's package
    /// layout (the generated code refers across packages by relative paths).
    pub mod envoy {
        pub mod service {
            pub mod ratelimit {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.ratelimit.v3");
                }
            }
        }
        pub mod extensions {
            pub mod common {
                pub mod ratelimit {
                    pub mod v3 {
                        tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                    }
                }
            }
        }
        pub mod config {
            pub mod core {
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
        pub mod r#type {
            pub mod v3 {
                tonic::include_proto!("envoy.r#type.v3");
            }
        }
    }
    /// Descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("permitd_descriptor");
}

pub mod app;
pub mod auth;
pub mod backoff;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod feedback;
pub mod idempotency;
pub mod learned;
pub mod listen;
pub mod metrics;
pub mod permits;
pub mod rls;
pub mod server;
pub mod store;
pub mod sweeper;
pub mod tls;
pub mod watch;
