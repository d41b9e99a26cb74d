//! `Quotas.Watch`: one task per subscriber turns hub announcements into a snapshot, then
//! coalesced updates.
//!
//! Each subscriber wakes at most twice per `min_interval` whatever the permit rate: it
//! awaits the first change, sleeps until its interval is up, then drains everything
//! announced meanwhile without waiting (`try_recv`) and sends each changed bucket's current
//! state once. Its outgoing channel is small: a client that does not read blocks only its
//! own task, whose ring then overflows; it resynchronises from a snapshot when it resumes.
//! Memory per subscriber is bounded by the ring and the number of live buckets.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast::error::TryRecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::quota_update;
use super::convert::{name, opt_duration};
use crate::auth::tenant;
use crate::engine::PermitEngine;
use crate::permits::resource::{MAX_NAME_LEN, Scope as ResourceScope};
use crate::permits::{PermitError, QuotaView, Registry};
use crate::proto;
use crate::watch::{BucketKey, Hub, Subscription};

/// Interval used when the request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest interval accepted (shorter asks are raised to it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Updates queued towards one client before its task waits.
const OUTBOX: usize = 16;
/// How long a snapshot keeps its list of keys for a client that does not read.
const STALLED: Duration = Duration::from_secs(1);

/// The stream type of Watch.
pub type WatchStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::QuotaUpdate, Status>> + Send>>;

/// Where a subscriber reads bucket state: the engine (over Redis, changes made through any
/// replica reach this one's hub over pub/sub), and the catalog of definitions.
#[derive(Clone)]
struct Source {
    registry: Registry,
    engine: Arc<dyn PermitEngine>,
}

impl Source {
    async fn quota(&self, resource: &str, partition: &str) -> Result<QuotaView, PermitError> {
        self.engine.quota(resource, partition).await
    }

    /// The buckets to show first, as keys (a range of a shared list): each one's state is
    /// read when it is sent. An engine that holds no bucket here (a Redis replica) lists
    /// each matching resource's resource-wide bucket; partitions follow as they change.
    fn snapshot(&self, prefix: &str, shared_only: bool) -> (Arc<[Arc<BucketKey>]>, Range<usize>) {
        let embedded = self.engine.holds_buckets();
        if embedded && !shared_only {
            return self.registry.bucket_keys(prefix);
        }
        // Resource-wide buckets only: one per resource, whatever its partitions (an
        // embedded per-partition resource has one only when it has shared limits).
        let mut keys: Vec<_> = self
            .registry
            .list(prefix, "", usize::MAX)
            .into_iter()
            .filter(|def| {
                !embedded
                    || !def.per_partition
                    || def
                        .limits
                        .iter()
                        .any(|l| l.scope == ResourceScope::Resource)
            })
            .map(|def| {
                Arc::new(BucketKey {
                    resource: def.name.as_str().into(),
                    partition: "".into(),
                })
            })
            .collect();
        keys.sort_by(|a, b| a.resource.cmp(&b.resource));
        let n = keys.len();
        (keys.into(), 0..n)
    }
}

/// Validate a Watch request and start its subscriber task.
pub fn start(
    registry: &Registry,
    engine: Arc<dyn PermitEngine>,
    hub: &Hub,
    tenant: &str,
    req: &proto::WatchRequest,
) -> Result<WatchStream, PermitError> {
    name(&req.resource_prefix, "resource_prefix", false, MAX_NAME_LEN)?;
    name(
        &req.partition_prefix,
        "partition_prefix",
        false,
        MAX_NAME_LEN,
    )?;
    let scope = Scope {
        tenant: tenant.into(),
        prefix: tenant::qualify(tenant, &req.resource_prefix).into_owned(),
        partition_prefix: req.partition_prefix.clone(),
        shared_only: req.resource_buckets_only,
    };
    let interval = opt_duration(
        req.min_interval.as_ref(),
        "min_interval",
        Duration::ZERO,
        MAX_INTERVAL,
    )?
    .unwrap_or(DEFAULT_INTERVAL)
    .max(MIN_INTERVAL)
    .max(registry.caps().min_watch_interval);
    let limit = registry.caps().watch_streams(tenant);
    let slot = hub
        .open_stream(tenant, limit)
        .ok_or_else(|| PermitError::Exhausted {
            cap: "max_watch_streams_per_tenant",
            limit,
            what: format!("{limit} Watch streams open in this tenant"),
        })?;
    // Subscribe before the snapshot so no change falls between the two.
    let sub = hub.subscribe(!req.resource_buckets_only);
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(run(
        Source {
            registry: registry.clone(),
            engine,
        },
        sub,
        scope,
        interval,
        tx,
        slot,
    ));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// What one subscriber sees: its tenant's buckets under its prefix (qualified), and of
/// those the partitions under its partition prefix (none when `shared_only`; a non-empty
/// partition prefix leaves out resource-wide buckets).
struct Scope {
    tenant: Arc<str>,
    prefix: String,
    partition_prefix: String,
    shared_only: bool,
}

impl Scope {
    fn holds(&self, k: &BucketKey) -> bool {
        let partition_ok = if self.shared_only {
            k.partition.is_empty()
        } else if self.partition_prefix.is_empty() {
            true
        } else {
            !k.partition.is_empty() && k.partition.starts_with(self.partition_prefix.as_str())
        };
        partition_ok
            && k.resource.starts_with(self.prefix.as_str())
            && tenant::split(&k.resource).0 == &*self.tenant
    }
}

type Outbox = mpsc::Sender<Result<proto::QuotaUpdate, Status>>;

/// Send every matching bucket's state, each read just before it is sent (so a slow reader
/// holds no copies, and what it gets is current); false when the client is gone.
async fn send_snapshot(source: &Source, scope: &Scope, tx: &Outbox) -> bool {
    let (mut keys, mut range) = source.snapshot(&scope.prefix, scope.shared_only);
    let mut at = range.start;
    while let Some(k) = keys.get(at).filter(|_| at < range.end).cloned() {
        at += 1;
        if !scope.holds(&k) {
            continue;
        }
        // Reserve the slot first: the state is read once the client has room for it. A
        // client that does not read for a second lets go of the list while it waits, and
        // resumes after the last key it was sent in the list of that moment.
        let slot = match tx.try_reserve() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Closed(())) => return false,
            // Full: wait for room, a second at most while holding the list.
            Err(mpsc::error::TrySendError::Full(())) => {
                match tokio::time::timeout(STALLED, tx.reserve()).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return false,
                    Err(_) => {
                        drop(keys);
                        let Ok(slot) = tx.reserve().await else {
                            return false;
                        };
                        (keys, range) = source.snapshot(&scope.prefix, scope.shared_only);
                        at = keys
                            .partition_point(|x| {
                                (&x.resource, &x.partition) <= (&k.resource, &k.partition)
                            })
                            .max(range.start);
                        slot
                    }
                }
            }
        };
        let Ok(v) = source.quota(&k.resource, &k.partition).await else {
            continue;
        };
        slot.send(Ok(quota_update(
            tenant::split(&k.resource).1,
            &k.partition,
            &v,
        )));
    }
    true
}

/// The final message of every stream at shutdown.
async fn shutting_down(tx: &Outbox) {
    let _ = tx
        .send(Err(Status::unavailable("server shutting down")))
        .await;
}

async fn run(
    registry: Source,
    mut sub: Subscription,
    scope: Scope,
    interval: Duration,
    tx: Outbox,
    // Held for the stream's life: the tenant's count of open streams.
    _slot: crate::watch::StreamSlot,
) {
    if !send_snapshot(&registry, &scope, &tx).await {
        return;
    }
    let mut next = tokio::time::Instant::now();
    loop {
        // Wait for the first change (or shutdown, or the client leaving).
        let first = tokio::select! {
            r = sub.changes.recv() => Some(r),
            Some(r) = recv_opt(sub.partitions.as_mut()) => Some(r),
            _ = sub.closed.wait_for(|c| *c) => None,
            () = tx.closed() => return,
        };
        let Some(first) = first else {
            return shutting_down(&tx).await;
        };
        let closing = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            _ = sub.closed.wait_for(|c| *c) => true,
        };
        if closing {
            return shutting_down(&tx).await;
        }
        let mut dirty: HashSet<Arc<BucketKey>> = HashSet::new();
        let mut lagged = false;
        let mut take = |r: Result<Arc<BucketKey>, bool>| match r {
            Ok(k) if scope.holds(&k) => {
                dirty.insert(k);
            }
            Ok(_) => {}
            Err(lag) => lagged |= lag,
        };
        take(first.map_err(|e| matches!(e, tokio::sync::broadcast::error::RecvError::Lagged(_))));
        for ring in std::iter::once(&mut sub.changes).chain(sub.partitions.as_mut()) {
            loop {
                match ring.try_recv() {
                    Ok(k) => take(Ok(k)),
                    Err(TryRecvError::Lagged(_)) => take(Err(true)),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
        }
        let ok = if lagged {
            // Fell a ring behind: skip the history, send the present.
            send_snapshot(&registry, &scope, &tx).await
        } else {
            let mut ok = true;
            for k in dirty {
                if let Ok(v) = registry.quota(&k.resource, &k.partition).await {
                    ok &= tx
                        .send(Ok(quota_update(
                            tenant::split(&k.resource).1,
                            &k.partition,
                            &v,
                        )))
                        .await
                        .is_ok();
                }
            }
            ok
        };
        if !ok {
            return;
        }
        next = tokio::time::Instant::now() + interval;
    }
}

/// The next change of a ring the subscriber may not have (never ready without one).
async fn recv_opt(
    ring: Option<&mut tokio::sync::broadcast::Receiver<Arc<BucketKey>>>,
) -> Option<Result<Arc<BucketKey>, tokio::sync::broadcast::error::RecvError>> {
    match ring {
        Some(r) => Some(r.recv().await),
        None => std::future::pending().await,
    }
}
