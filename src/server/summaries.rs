//! `Quotas.GetSummary`, `ListPartitions` and `WatchSummaries`: resources with many
//! partitions, at a glance ([`crate::permits::summary`]).
//!
//! A `WatchSummaries` subscriber is one task that, once per interval, takes each matching
//! resource's shared ranking and sends its summary when the figures changed. It reserves
//! room in its outbox before it reads anything, so a client that does not read holds one
//! waiting task and nothing else: memory per subscriber does not grow with the partitions.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::quota_update;
use super::convert::{name, opt_duration, to_duration, to_timestamp};
use crate::auth::{Caller, tenant};
use crate::permits::resource::MAX_NAME_LEN;
use crate::permits::summary::{DEFAULT_TOP, MAX_TOP, Order, REFRESH, SummaryView};
use crate::permits::{PermitError, Registry};
use crate::proto;
use crate::watch::Hub;

/// Interval of WatchSummaries when the request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default page size of ListPartitions.
const DEFAULT_PAGE: usize = 100;
/// Largest page size of ListPartitions.
const MAX_PAGE: usize = 1000;
/// Summaries queued towards one client before its task waits.
const OUTBOX: usize = 4;

/// The stream type of WatchSummaries.
pub type SummaryStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ResourceSummary, Status>> + Send>,
>;

/// What a cluster replica answers: it holds no partition buckets of its own.
pub fn not_held_here(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc}: partition views need the embedded engine; a cluster replica holds no \
         partition buckets (use GetQuota per partition)"
    ))
}

fn top(n: u32) -> usize {
    match usize::try_from(n).unwrap_or(usize::MAX) {
        0 => DEFAULT_TOP,
        n => n.min(MAX_TOP),
    }
}

/// A summary on the wire, named as its tenant names it.
#[must_use]
pub fn summary_to_proto(
    local: &str,
    per_partition: bool,
    s: &SummaryView,
) -> proto::ResourceSummary {
    let t = &s.totals;
    #[allow(clippy::cast_precision_loss)]
    let near_empty_share = if t.partitions == 0 {
        0.0
    } else {
        t.near_empty as f64 / t.partitions as f64
    };
    proto::ResourceSummary {
        resource: local.to_owned(),
        resource_bucket: s.shared.as_ref().map(|v| quota_update(local, "", v)),
        per_partition,
        live_partitions: t.partitions,
        in_flight: t.in_flight,
        queue_depth: t.queued,
        near_empty: t.near_empty,
        near_empty_share,
        cooling_down: t.cooling,
        probing: t.probing,
        granted_total: t.granted,
        denied_total: t.denied,
        upstream_429_total: t.upstream_429,
        granted_per_second: s.granted_per_second,
        denied_per_second: s.denied_per_second,
        rate_window: Some(to_duration(s.window)),
        top: s
            .top
            .iter()
            .map(|(p, v)| quota_update(local, p, v))
            .collect(),
        at: Some(to_timestamp(s.at)),
        version: s.version,
    }
}

/// GetSummary.
pub fn get(
    registry: &Registry,
    caller: &Caller,
    r: &proto::GetSummaryRequest,
) -> Result<proto::ResourceSummary, PermitError> {
    let resource = caller.qualify(&r.resource, "resource", MAX_NAME_LEN)?;
    name(&r.partition_prefix, "partition_prefix", false, MAX_NAME_LEN)?;
    let def = registry.definition(&resource)?;
    let s = registry.summary(&resource, &r.partition_prefix, top(r.top))?;
    Ok(summary_to_proto(&r.resource, def.per_partition, &s))
}

/// ListPartitions. Page tokens are `n:<last name>` in name order and `p:<count>` in
/// pressure order, so one order's token can't be taken for the other's.
pub fn list(
    registry: &Registry,
    caller: &Caller,
    r: &proto::ListPartitionsRequest,
) -> Result<proto::ListPartitionsResponse, PermitError> {
    let resource = caller.qualify(&r.resource, "resource", MAX_NAME_LEN)?;
    name(&r.partition_prefix, "partition_prefix", false, MAX_NAME_LEN)?;
    let order = match proto::PartitionOrder::try_from(r.order) {
        Ok(proto::PartitionOrder::Pressure) => Order::Pressure,
        Ok(proto::PartitionOrder::Unspecified | proto::PartitionOrder::Name) => Order::Name,
        Err(_) => {
            return Err(PermitError::Invalid {
                field: "order".into(),
                message: format!("unknown order {}", r.order),
            });
        }
    };
    let size = match usize::try_from(r.page_size).unwrap_or(usize::MAX) {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let bad_token = || PermitError::Invalid {
        field: "page_token".into(),
        message: "not a token of this order (pass next_page_token as given)".into(),
    };
    let after = match (order, r.page_token.as_str()) {
        (_, "") => "",
        (Order::Name, t) => t.strip_prefix("n:").ok_or_else(bad_token)?,
        (Order::Pressure, t) => {
            let n = t.strip_prefix("p:").ok_or_else(bad_token)?;
            n.parse::<u64>().map_err(|_| bad_token())?;
            n
        }
    };
    let (rows, more, total) =
        registry.partitions(&resource, &r.partition_prefix, order, after, size)?;
    let next_page_token = match (more, order) {
        (false, _) => String::new(),
        (true, Order::Name) => rows
            .last()
            .map(|(p, _)| format!("n:{p}"))
            .unwrap_or_default(),
        (true, Order::Pressure) => {
            let done = after.parse::<usize>().unwrap_or(0) + rows.len();
            format!("p:{done}")
        }
    };
    Ok(proto::ListPartitionsResponse {
        partitions: rows
            .iter()
            .map(|(p, v)| quota_update(&r.resource, p, v))
            .collect(),
        next_page_token,
        total,
    })
}

/// What one subscriber asked for.
struct Ask {
    tenant: Arc<str>,
    prefix: String,
    partition_prefix: String,
    top: usize,
    interval: Duration,
}

/// Validate a WatchSummaries request and start its subscriber task.
pub fn watch(
    registry: &Registry,
    hub: &Hub,
    tenant: &str,
    r: &proto::WatchSummariesRequest,
) -> Result<SummaryStream, PermitError> {
    name(&r.resource_prefix, "resource_prefix", false, MAX_NAME_LEN)?;
    name(&r.partition_prefix, "partition_prefix", false, MAX_NAME_LEN)?;
    let interval = opt_duration(
        r.min_interval.as_ref(),
        "min_interval",
        Duration::ZERO,
        super::watch::MAX_INTERVAL,
    )?
    .unwrap_or(DEFAULT_INTERVAL)
    // Faster than the ranking is read again would resend the same figures.
    .max(REFRESH)
    .max(registry.caps().min_watch_interval);
    let limit = registry.caps().watch_streams(tenant);
    let slot = hub
        .open_stream(tenant, limit)
        .ok_or_else(|| PermitError::Exhausted {
            cap: "max_watch_streams_per_tenant",
            limit,
            what: format!("{limit} Watch streams open in this tenant"),
        })?;
    let ask = Ask {
        tenant: tenant.into(),
        prefix: tenant::qualify(tenant, &r.resource_prefix).into_owned(),
        partition_prefix: r.partition_prefix.clone(),
        top: top(r.top),
        interval,
    };
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(run(registry.clone(), hub.closed(), ask, tx, slot));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// A fingerprint of a summary's figures (not of when they were read).
fn figures(s: &proto::ResourceSummary) -> u64 {
    let mut s = s.clone();
    s.at = None;
    s.version = 0;
    s.rate_window = None;
    // A full bucket's reset is "now": it moves with every reading.
    let strip = |u: &mut proto::QuotaUpdate| {
        u.at = None;
        u.dimensions.iter_mut().for_each(|d| d.reset_at = None);
    };
    if let Some(b) = s.resource_bucket.as_mut() {
        strip(b);
    }
    s.top.iter_mut().for_each(strip);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.encode_to_vec().hash(&mut h);
    h.finish()
}

async fn run(
    registry: Registry,
    mut closed: tokio::sync::watch::Receiver<bool>,
    ask: Ask,
    tx: mpsc::Sender<Result<proto::ResourceSummary, Status>>,
    _slot: crate::watch::StreamSlot,
) {
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(ask.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closing = tokio::select! {
            _ = tick.tick() => false,
            // Shutdown (or the hub gone, which only happens then too).
            _ = closed.wait_for(|c| *c) => true,
            () = tx.closed() => return,
        };
        if closing {
            return shutting_down(&tx).await;
        }
        let defs = registry.list_where(&ask.prefix, "", usize::MAX, |n| {
            tenant::split(n).0 == &*ask.tenant
        });
        sent.retain(|k, _| defs.iter().any(|d| &d.name == k));
        for def in defs {
            // Room first: a client that does not read makes this task wait here, holding
            // nothing it read.
            let slot = tokio::select! {
                s = tx.reserve() => match s {
                    Ok(s) => Some(s),
                    Err(_) => return,
                },
                r = closed.wait_for(|c| *c) => {
                    if r.is_err() { return; }
                    None
                }
            };
            let Some(slot) = slot else {
                return shutting_down(&tx).await;
            };
            let Ok(s) = registry.summary(&def.name, &ask.partition_prefix, ask.top) else {
                continue; // deleted meanwhile
            };
            let msg = summary_to_proto(tenant::split(&def.name).1, def.per_partition, &s);
            let f = figures(&msg);
            if sent.get(&def.name) == Some(&f) {
                continue;
            }
            sent.insert(def.name.clone(), f);
            slot.send(Ok(msg));
        }
    }
}

async fn shutting_down(tx: &mpsc::Sender<Result<proto::ResourceSummary, Status>>) {
    let _ = tx
        .send(Err(Status::unavailable("server shutting down")))
        .await;
}
