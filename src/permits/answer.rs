//! What the registry takes and answers: plain data, no behaviour. Kept apart from the
//! registry so the server's conversions read against a short file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::denial::DenialReason;
use super::resource::ResourceDef;

/// A request for a permit, validated except for what needs the resource.
#[derive(Debug, Clone)]
pub struct AcquireRequest<'a> {
    /// The resource.
    pub resource: &'a str,
    /// The partition.
    pub partition: &'a str,
    /// Dimension -> amount (`requests` defaults to 1).
    pub cost: &'a HashMap<String, u64>,
    /// How long the caller may wait (already capped by its deadline).
    pub max_wait: Duration,
    /// Higher first.
    pub priority: i32,
    /// Lease override.
    pub lease: Option<Duration>,
}

/// The answer to an acquire.
#[derive(Debug, Clone)]
pub struct AcquireOutcome {
    /// The resource definition the answer was computed under (to name dimensions).
    pub def: Arc<ResourceDef>,
    /// `Ok(grant)` or `Err(denial)`.
    pub result: Result<GrantInfo, Denial>,
    /// Time spent queued.
    pub waited: Duration,
    /// (dimension index, units left) per limited dimension.
    pub remaining: Vec<(usize, u64)>,
}

/// What [`super::Registry::take`] did.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The definition it was decided under.
    pub def: Arc<ResourceDef>,
    /// Whether the cost was taken.
    pub taken: bool,
    /// (dimension index, units left) per limited dimension, after the take.
    pub remaining: Vec<(usize, u64)>,
}

/// A granted permit.
#[derive(Debug, Clone)]
pub struct GrantInfo {
    /// Its id.
    pub permit_id: String,
    /// When its lease ends.
    pub lease_expires_at: SystemTime,
}

/// A denial.
#[derive(Debug, Clone, Copy)]
pub struct Denial {
    /// Why.
    pub reason: DenialReason,
    /// When to come back (never zero).
    pub retry_after: Duration,
}

/// How a released permit's cost is settled, by dimension name.
#[derive(Debug, Clone, Copy)]
pub enum Settlement<'a> {
    /// Keep the cost as acquired.
    Keep,
    /// Give it all back.
    Refund,
    /// What the call really used.
    Actual(&'a HashMap<String, u64>),
}

/// One bucket's state for dashboards and GetQuota.
#[derive(Debug, Clone)]
pub struct QuotaView {
    /// The definition.
    pub def: Arc<ResourceDef>,
    /// Per limited dimension, the tightest limit.
    pub dimensions: Vec<DimensionView>,
    /// Leases held.
    pub in_flight: u32,
    /// Concurrency limit.
    pub concurrency: u32,
    /// Waiters.
    pub queue_depth: u32,
    /// Grants.
    pub granted_total: u64,
    /// Denials.
    pub denied_total: u64,
    /// Set while the bucket is paused after an upstream 429/503.
    pub cooldown_until: Option<SystemTime>,
    /// Upstream 429 answers reported.
    pub upstream_429_total: u64,
    /// When read.
    pub at: SystemTime,
    /// In slow start: the limits are not confirmed by the upstream yet.
    pub probing: bool,
    /// Why the cooldown is in force ("" without one).
    pub cooldown_reason: String,
}

/// One dimension's state.
#[derive(Debug, Clone)]
pub struct DimensionView {
    /// Dimension index.
    pub dimension: usize,
    /// Amount per period of the tightest limit.
    pub limit: u64,
    /// Period of that limit.
    pub period: Duration,
    /// Units left.
    pub remaining: u64,
    /// When the bucket is full again.
    pub reset_at: SystemTime,
    /// Whether the limit was learned.
    pub learned: bool,
    /// Where the limit came from.
    pub source: super::resource::Origin,
    /// Why it is what it is, in words.
    pub reason: String,
    /// Units per second.
    pub rate_per_second: f64,
}

/// One resource's figures for metrics.
#[derive(Debug, Clone)]
pub struct ResourceMetrics {
    /// The definition.
    pub def: Arc<ResourceDef>,
    /// Its counters.
    pub stats: Arc<super::stats::ResourceStats>,
    /// The resource-wide bucket's dimensions.
    pub dimensions: Vec<DimensionView>,
    /// Leases held, over all its buckets.
    pub in_flight: u64,
    /// Waiters, over all its buckets.
    pub queue_depth: u64,
    /// Longest cooldown left in any of its buckets.
    pub cooldown_remaining: Duration,
    /// Live buckets.
    pub buckets: u64,
    /// Buckets in slow start (limits not confirmed by the upstream yet).
    pub probing: u64,
}
