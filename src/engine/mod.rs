//! The one contract both permit engines keep: the embedded registry ([`crate::permits::Registry`],
//! buckets in this process) and the Redis engine ([`crate::cluster::Cluster`], buckets shared
//! by every replica). `app` picks one at start; the services hold an `Arc<dyn PermitEngine>`
//! and never ask which.
//!
//! What a caller may rely on, whichever engine answers, is what `tests/it/engine.rs`'s
//! conformance suite checks on both; where they still differ, the difference is a named
//! exception there, and a method here says so ([`PermitEngine::holds_buckets`]).
//!
//! Resource definitions are not the engine's: they live in the registry's catalog on both
//! engines, and the engine reads them from there.

mod embedded;
pub mod report;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::clock::Nanos;
use crate::feedback::apply::Target;
use crate::permits::id::PermitId;
use crate::permits::{
    AcquireOutcome, AcquireRequest, PermitError, QuotaView, ResourceDef, Settlement,
};

/// An engine call in progress.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PermitError>> + Send + 'a>>;

/// A feedback decision, applied to a bucket's state: `decide(definition, bucket, now)`.
pub type Decide<'a> = dyn FnMut(&ResourceDef, &mut dyn Target, Nanos) + Send + 'a;

/// What applying feedback left behind, beyond what the decision itself returned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// The instant the decision was made at (the engine's clock).
    pub now: Nanos,
    /// The cooldown in force now, whoever set it (another replica's included).
    pub cooldown_until: Option<Nanos>,
}

/// Units a lease-free take (Envoy's rate limit service) holds until it is kept or given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Nothing was taken.
    Nothing,
    /// Units taken from a bucket, with no lease to end.
    Units {
        /// The resource (tenant-qualified).
        resource: String,
        /// The partition.
        partition: String,
        /// How many requests.
        hits: u64,
    },
    /// A permit whose lease ends when the hit is settled.
    Permit(String),
}

/// A take's answer: what it holds, and (dimension index, units left) per limited dimension.
#[derive(Debug, Clone)]
pub struct Took {
    /// What to settle later; [`Hold::Nothing`] when refused.
    pub hold: Hold,
    /// Units left after the take.
    pub remaining: Vec<(usize, u64)>,
}

/// A permit engine. Every method is atomic on the buckets it touches: no caller sees a
/// half-applied grant, release or feedback.
pub trait PermitEngine: Send + Sync + std::fmt::Debug + 'static {
    /// Whether this engine can hold `def` exactly (before it is stored).
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming the limit it cannot hold.
    fn admits(&self, def: &ResourceDef) -> Result<(), PermitError>;

    /// Grant, queue (up to `max_wait`) or deny `req`.
    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> EngineFuture<'a, AcquireOutcome>;

    /// End a permit's lease, settling its cost. The grant's instant when the engine knows it.
    fn release<'a>(
        &'a self,
        id: &'a PermitId<'a>,
        settlement: Settlement<'a>,
    ) -> EngineFuture<'a, Option<Nanos>>;

    /// Charge (or refund) what calls made without a permit really used.
    fn charge<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        actual: &'a HashMap<String, u64>,
    ) -> EngineFuture<'a, ()>;

    /// Apply an upstream's answer to a bucket: `decide` runs once, on the bucket's state.
    fn feedback<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        decide: &'a mut Decide<'a>,
    ) -> EngineFuture<'a, Applied>;

    /// One bucket's state (a bucket not made yet reads as full).
    fn quota<'a>(&'a self, resource: &'a str, partition: &'a str) -> EngineFuture<'a, QuotaView>;

    /// Take `hits` requests at once, with no lease and no wait, or nothing.
    fn take<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        hits: u64,
    ) -> EngineFuture<'a, Took>;

    /// Keep what a take holds, or give it back (`refund`).
    fn settle<'a>(&'a self, hold: Hold, refund: bool) -> EngineFuture<'a, ()>;

    /// Clear a resource's state (cooldowns, blocks, learned limits, leases): the number of
    /// buckets cleared.
    fn reset<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, usize>;

    /// A resource was defined (`replaced`: over an older definition, whose state goes).
    fn defined<'a>(&'a self, resource: &'a str, replaced: bool) -> EngineFuture<'a, ()>;

    /// A resource is about to be deleted: its state goes first, so a resource of the same
    /// name made later starts afresh.
    fn deleting<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, ()>;

    /// A resource was deleted (other replicas forget it).
    fn deleted<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, ()>;

    /// A permit was released as used (`ReleasePermit` without a refund) and no report will
    /// follow: a probing bucket counts the call as done.
    fn released_unreported(&self, id: &PermitId<'_>);

    /// Whether the engine can serve now, as it changes (`None`: always). A Redis engine that
    /// fails closed cannot while Redis is unreachable; health follows this.
    fn serving(&self) -> Option<tokio::sync::watch::Receiver<bool>>;

    /// How long until (`resource`, `partition`) has room for one more request, or its queue
    /// is served, when the engine can tell without a round trip.
    fn retry_wait(&self, resource: &str, partition: &str) -> Option<Duration>;

    /// What a bucket learned changed (limits, a block, the adaptive rate): keep it across
    /// restarts if the engine does not already.
    fn learned(&self, resource: &str, partition: &str);

    /// Housekeeping, every few seconds: reclaim expired leases and drop idle partition
    /// buckets held here. (leases reclaimed, buckets dropped).
    fn sweep(&self) -> (usize, usize);

    /// Whether every bucket lives in this process, so that views over all partitions (the
    /// summary, the partition list, a Watch snapshot of every bucket) are complete here.
    /// The Redis engine's replicas hold none: those views are its documented exception.
    fn holds_buckets(&self) -> bool;
}
