//! The quota-update hub: every bucket change is announced here, and each Watch subscriber
//! turns the announcements into coalesced updates of the *current* state.
//!
//! Why this shape: the permit path must never wait on a subscriber, and a slow subscriber
//! must never make the server buffer without bound. So a change carries only the bucket's
//! key (an `Arc`, no state), goes into a fixed-size `tokio::sync::broadcast` ring (a send
//! never blocks and costs one atomic load when nobody watches), and each subscriber reads
//! the bucket's state itself when it is ready to send. A subscriber that falls more than a
//! ring behind gets `Lagged` and resynchronises from a full snapshot: it skips to the
//! latest state instead of replaying history. Coalescing falls out of the same design: the
//! keys seen during one `min_interval` are sent once each.
//!
//! Resource-wide buckets and partitions have rings of their own: a resource may have 10^5
//! partitions changing thousands of times a second, and a subscriber that shows only
//! resource-wide buckets (the dashboard, which reads partitions as summaries) must not pay
//! for reading and dropping each of those changes, nor resynchronise whenever they overflow
//! its ring.
//!
//! sled's `watch_prefix` is deliberately not used (subscribers can leak, spacejam/sled#1380).

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

/// Changes buffered per subscriber before it must resynchronise.
pub const RING: usize = 4096;

/// The key of a bucket: (resource, partition); the partition is empty for the
/// resource-wide bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    /// The resource.
    pub resource: Arc<str>,
    /// The partition.
    pub partition: Arc<str>,
}

/// The hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Changes of resource-wide buckets.
    tx: broadcast::Sender<Arc<BucketKey>>,
    /// Changes of partition buckets.
    parts: broadcast::Sender<Arc<BucketKey>>,
    closed: watch::Sender<bool>,
    /// Streams open per tenant (Watch and dashboard feeds), for the cap.
    streams: Arc<crate::permits::caps::Counter>,
}

/// One open stream of a tenant, counted until dropped.
pub type StreamSlot = crate::permits::caps::Held;

/// One subscriber's view of the hub.
#[derive(Debug)]
pub struct Subscription {
    /// Announced changes of resource-wide buckets.
    pub changes: broadcast::Receiver<Arc<BucketKey>>,
    /// Announced changes of partitions (`None` for a subscriber of resource-wide buckets
    /// only).
    pub partitions: Option<broadcast::Receiver<Arc<BucketKey>>>,
    /// Flips to true at shutdown.
    pub closed: watch::Receiver<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub with no subscribers.
    #[must_use]
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(RING);
        let (parts, _) = broadcast::channel(RING);
        let (closed, _) = watch::channel(false);
        Self {
            tx,
            parts,
            closed,
            streams: Arc::default(),
        }
    }

    /// A slot for one more stream of `tenant`, or `None` when it has `limit` open.
    #[must_use]
    pub fn open_stream(&self, tenant: &str, limit: usize) -> Option<StreamSlot> {
        self.streams.take(tenant, limit, usize::MAX).ok()
    }

    /// Announce that a bucket changed. Never blocks; nearly free with no subscriber.
    pub fn changed(&self, key: &Arc<BucketKey>) {
        self.changed_with(!key.partition.is_empty(), || Arc::clone(key));
    }

    /// [`Self::changed`] for a key built only when someone watches (buckets keep their key
    /// inline: per-bucket memory matters more than an allocation per watched change).
    pub fn changed_with(&self, partition: bool, key: impl FnOnce() -> Arc<BucketKey>) {
        let ring = if partition { &self.parts } else { &self.tx };
        if ring.receiver_count() > 0 {
            // An error only means every subscriber left meanwhile.
            let _ = ring.send(key());
        }
    }

    /// Subscribe (take the snapshot *after* this, so no change falls in between); with
    /// `partitions` false, to resource-wide buckets only.
    #[must_use]
    pub fn subscribe(&self, partitions: bool) -> Subscription {
        Subscription {
            changes: self.tx.subscribe(),
            partitions: partitions.then(|| self.parts.subscribe()),
            closed: self.closed.subscribe(),
        }
    }

    /// The shutdown signal alone (for streams that poll rather than follow changes).
    #[must_use]
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Subscribers now.
    #[must_use]
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Shutdown: every subscription sees `closed` and ends its stream.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(r: &str) -> Arc<BucketKey> {
        Arc::new(BucketKey {
            resource: r.into(),
            partition: "".into(),
        })
    }

    /// Changes reach subscribers; a subscriber that falls a ring behind is told it lagged
    /// (and resynchronises) instead of the hub buffering without bound.
    #[tokio::test]
    async fn lagging_subscriber_skips() {
        let hub = Hub::new();
        hub.changed(&key("nobody-listens"));
        let mut s = hub.subscribe(false);
        hub.changed(&key("a"));
        assert_eq!(s.changes.recv().await.unwrap().resource.as_ref(), "a");
        for _ in 0..RING + 10 {
            hub.changed(&key("b"));
        }
        assert!(matches!(
            s.changes.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        hub.close();
        assert!(*s.closed.borrow_and_update());
    }
}
