//! The live registry: resources, their buckets, and the async part of permits (queueing,
//! wake-up timers, cancellation).
//!
//! Concurrency design: resources sit in a `DashMap` (sharded, so lookups of different
//! resources don't contend); each bucket is a `std::sync::Mutex<BucketState>` held only for
//! the check-and-take (nanoseconds, never across an await), which is what makes "never more
//! grants than allowed" hold under any concurrency. A queued caller waits on a oneshot that
//! the bucket fills when capacity returns: on a release, or when a timer armed for the head's
//! exact ready time fires. There is no polling loop.
//!
//! Lock order: a permit's home bucket, then its secondary bucket. Which bucket is home is
//! fixed by the resource definition, so two permits never lock the same pair in opposite
//! orders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::PermitError;
use super::answer::{AcquireOutcome, AcquireRequest, Denial, GrantInfo, Settlement, Taken};
use super::bucket::{
    Block, BucketState, Granted, LearnedState, QueueKey, Settle, WaitOutcome, Waiter,
};
use super::cost::{never, resolve_actual, resolve_cost};
use super::denial::DenialReason;
use super::id::{self, PermitId};
use super::resource::{ResourceDef, Scope};
use super::stats::ResourceStats;
use crate::clock::{Clock, Nanos, nanos};
use crate::watch::{BucketKey, Hub};

#[derive(Debug)]
struct Bucket {
    state: Mutex<BucketState>,
    /// The resource's name, shared by its buckets (a thin pointer: 8 bytes, not 16).
    resource: Arc<Arc<str>>,
    /// The partition's name, inline when short: no allocation of its own.
    partition: PartitionName,
}

impl Bucket {
    fn new(
        def: &ResourceDef,
        scope: Scope,
        resource: &Arc<Arc<str>>,
        partition: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(BucketState::new(def, scope, def.home_scope() == scope)),
            resource: Arc::clone(resource),
            partition: PartitionName::new(partition),
        })
    }
    fn lock(&self) -> MutexGuard<'_, BucketState> {
        // A panic while holding the lock leaves consistent integer state: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// The key announced to the watch hub. Built per announcement, and only when someone
    /// watches: a key kept in every bucket would cost each one an allocation.
    fn key(&self) -> Arc<BucketKey> {
        Arc::new(BucketKey {
            resource: Arc::clone(&self.resource),
            partition: self.partition.to_shared(),
        })
    }
}

/// Longest partition name held inline.
const INLINE_NAME: usize = 22;

/// A partition name: inline up to [`INLINE_NAME`] bytes (user ids, tenant ids, key
/// hashes), shared beyond. Same size as an `Arc<str>` plus 8 bytes, and saves the 32-byte
/// allocation most names would take.
#[derive(Debug, Clone)]
enum PartitionName {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Shared(Arc<str>),
}

impl PartitionName {
    fn new(name: &str) -> Self {
        let mut bytes = [0; INLINE_NAME];
        match (bytes.get_mut(..name.len()), u8::try_from(name.len())) {
            (Some(b), Ok(len)) => {
                b.copy_from_slice(name.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(name.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Always a whole `str`'s bytes, so always valid UTF-8.
            Self::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Self::Shared(s) => s,
        }
    }

    fn to_shared(&self) -> Arc<str> {
        match self {
            Self::Inline { .. } => self.as_str().into(),
            Self::Shared(s) => Arc::clone(s),
        }
    }
}

/// A partition bucket as the key of its own map, looked up by its partition name: the map
/// stores one pointer per bucket instead of a (name, bucket) pair.
#[derive(Debug)]
struct PartitionKey(Arc<Bucket>);

impl std::borrow::Borrow<str> for PartitionKey {
    fn borrow(&self) -> &str {
        self.0.partition.as_str()
    }
}

impl std::hash::Hash for PartitionKey {
    // Hashes exactly like the `str` it borrows as, as `Borrow` requires.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        str::hash(self.0.partition.as_str(), state);
    }
}

impl PartialEq for PartitionKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.partition.as_str() == other.0.partition.as_str()
    }
}

impl Eq for PartitionKey {}

#[derive(Debug)]
struct Entry {
    def: Arc<ResourceDef>,
    stats: Arc<ResourceStats>,
    shared: Arc<Bucket>,
    partitions: DashMap<PartitionKey, ()>,
    shared_has_limits: bool,
    name: Arc<Arc<str>>,
    /// The registry's count of bucket-set changes (for [`Registry::bucket_keys`]).
    generation: Arc<AtomicU64>,
    /// The shared ranking of its partitions (summaries, pages, the dashboard).
    ranking: summary::RankingCell,
}

impl Entry {
    fn new(def: ResourceDef, generation: Arc<AtomicU64>) -> Self {
        let name: Arc<Arc<str>> = Arc::new(def.name.as_str().into());
        let shared = Bucket::new(&def, Scope::Resource, &name, "");
        let shared_has_limits = def.limits.iter().any(|l| l.scope == Scope::Resource);
        Self {
            def: Arc::new(def),
            stats: Arc::default(),
            shared,
            partitions: DashMap::new(),
            shared_has_limits,
            name,
            generation,
            ranking: summary::RankingCell::default(),
        }
    }

    fn partition(&self, partition: &str) -> Option<Arc<Bucket>> {
        self.partitions
            .get(partition)
            .map(|b| Arc::clone(&b.key().0))
    }

    /// The partition's bucket, made if it is new and the resource has fewer than `cap()`
    /// live partitions (read only then: a known partition costs one lookup). Concurrent
    /// creators may pass the cap by a few: it bounds memory, not an exact count.
    fn partition_or_create(
        &self,
        partition: &str,
        cap: impl FnOnce() -> usize,
    ) -> Result<Arc<Bucket>, PermitError> {
        if let Some(b) = self.partition(partition) {
            return Ok(b);
        }
        let (limit, have) = (cap(), self.partitions.len());
        if have >= limit {
            return Err(PermitError::Exhausted {
                cap: "max_partitions_per_resource",
                limit,
                what: format!(
                    "{have} live partitions of resource {:?}",
                    crate::auth::tenant::split(&self.name).1
                ),
            });
        }
        // Built before the entry is taken (it is the key); a racing creator's stays.
        let fresh = Bucket::new(&self.def, Scope::Partition, &self.name, partition);
        let b = match self.partitions.entry(PartitionKey(fresh)) {
            dashmap::Entry::Occupied(o) => Arc::clone(&o.key().0),
            dashmap::Entry::Vacant(v) => {
                let b = Arc::clone(&v.key().0);
                v.insert(());
                self.generation.fetch_add(1, Ordering::Release);
                b
            }
        };
        Ok(b)
    }

    /// (home, secondary) buckets of a partition; `None` when the partition bucket does not
    /// exist.
    fn buckets(&self, partition: &str) -> Option<(Arc<Bucket>, Option<Arc<Bucket>>)> {
        if !self.def.per_partition {
            return Some((Arc::clone(&self.shared), None));
        }
        let part = self.partition(partition)?;
        Some((part, self.secondary()))
    }

    /// [`Self::buckets`], making the partition's bucket if needed (within `cap`).
    fn buckets_or_create(
        &self,
        partition: &str,
        cap: impl FnOnce() -> usize,
    ) -> Result<(Arc<Bucket>, Option<Arc<Bucket>>), PermitError> {
        if !self.def.per_partition {
            return Ok((Arc::clone(&self.shared), None));
        }
        let part = self.partition_or_create(partition, cap)?;
        Ok((part, self.secondary()))
    }

    /// The resource-wide bucket as secondary of a partition, when it has limits.
    fn secondary(&self) -> Option<Arc<Bucket>> {
        self.shared_has_limits.then(|| Arc::clone(&self.shared))
    }

    fn all_buckets(&self) -> Vec<Arc<Bucket>> {
        let mut v = vec![Arc::clone(&self.shared)];
        v.extend(self.partitions.iter().map(|b| Arc::clone(&b.key().0)));
        v
    }
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    resources: DashMap<String, Arc<Entry>>,
    seq: AtomicU64,
    template: Option<ResourceDef>,
    hub: Hub,
    closed: AtomicBool,
    /// Buckets whose learned state changed since it was last kept: (resource, partition).
    learned_dirty: Mutex<std::collections::HashSet<(String, String)>>,
    /// What clients may make the registry hold.
    caps: super::caps::Caps,
    /// Resources per tenant, kept with `resources` (a flood of new names costs O(1) each).
    per_tenant: DashMap<String, usize>,
    /// Callers queued, per tenant and in all, for the waiter caps.
    waiters: Arc<super::caps::Counter>,
    /// Changes to the set of buckets (a resource put or removed, a partition made or
    /// swept): the list of keys is rebuilt only after one.
    generation: Arc<AtomicU64>,
    /// The last list of every bucket's key and the generation it was made at
    /// ([`Self::bucket_keys`]).
    keys_cache: Mutex<Option<(u64, BucketKeys)>>,
}

/// Every bucket's key, sorted, shared by the Watch snapshots that walk it.
pub type BucketKeys = Arc<[Arc<crate::watch::BucketKey>]>;

/// The live registry of resources and buckets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Both locks of a permit's buckets.
struct Locked<'a> {
    home: MutexGuard<'a, BucketState>,
    sec: Option<MutexGuard<'a, BucketState>>,
}

impl Locked<'_> {
    fn retired(&self) -> bool {
        self.home.retired || self.sec.as_ref().is_some_and(|s| s.retired)
    }
}

/// A cost of `requests` in the `requests` dimension (index 0) and nothing else.
fn requests_cost(def: &ResourceDef, requests: u64) -> Vec<u64> {
    let mut cost = vec![0; def.dimensions.len().max(1)];
    cost[0] = requests;
    cost
}

fn lock_pair<'a>(home: &'a Bucket, sec: Option<&'a Arc<Bucket>>) -> Locked<'a> {
    let home = home.lock();
    let sec = sec.map(|s| s.lock());
    Locked { home, sec }
}

impl Registry {
    /// An empty registry. `template`: definition used for resources created on first use
    /// (`None`: unknown resources are NOT_FOUND).
    #[must_use]
    pub fn new(clock: Arc<dyn Clock>, template: Option<ResourceDef>, hub: Hub) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                resources: DashMap::new(),
                seq: AtomicU64::new(1),
                template,
                closed: AtomicBool::new(false),
                hub,
                learned_dirty: Mutex::default(),
                caps: super::caps::Caps::default(),
                per_tenant: DashMap::new(),
                waiters: Arc::default(),
                generation: Arc::default(),
                keys_cache: Mutex::default(),
            }),
        }
    }

    /// Hold the registry to `caps`. Call right after [`Self::new`], before the registry is
    /// shared (later calls change nothing).
    #[must_use]
    pub fn with_caps(mut self, caps: super::caps::Caps) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.caps = caps;
        }
        self
    }

    /// The caps in force.
    #[must_use]
    pub fn caps(&self) -> &super::caps::Caps {
        &self.inner.caps
    }

    /// One more (`up`) or one less resource of `name`'s tenant.
    fn count_resource(&self, name: &str, up: bool) {
        let tenant = crate::auth::tenant::split(name).0;
        let mut n = self.inner.per_tenant.entry(tenant.to_owned()).or_insert(0);
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    /// RESOURCE_EXHAUSTED when `name` is new and its tenant has all the resources it may.
    ///
    /// # Errors
    /// [`PermitError::Exhausted`] naming `max_resources_per_tenant`.
    pub fn check_new_resource(&self, name: &str) -> Result<(), PermitError> {
        if self.inner.resources.contains_key(name) {
            return Ok(());
        }
        let tenant = crate::auth::tenant::split(name).0;
        let limit = self.inner.caps.resources(tenant);
        let have = self.inner.per_tenant.get(tenant).map_or(0, |n| *n);
        if have >= limit {
            return Err(PermitError::Exhausted {
                cap: "max_resources_per_tenant",
                limit,
                what: format!("{have} resources in this tenant"),
            });
        }
        Ok(())
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Define or replace a resource; returns true when it replaced one. Waiters of the old
    /// definition retry against the new one.
    pub fn put(&self, def: ResourceDef) -> bool {
        let name = def.name.clone();
        let old = self.inner.resources.insert(
            name.clone(),
            Arc::new(Entry::new(def, Arc::clone(&self.inner.generation))),
        );
        self.inner.generation.fetch_add(1, Ordering::Release);
        match &old {
            Some(old) => close_entry(old, || WaitOutcome::Replaced),
            None => self.count_resource(&name, true),
        }
        old.is_some()
    }

    /// Clear what feedback imposed on a resource (an admin's ResetResource): its buckets
    /// start afresh under its definition, and what they learned is forgotten on disk too
    /// (their records are rewritten empty at the next persist). Returns the live buckets.
    ///
    /// # Errors
    /// [`PermitError::UnknownResource`].
    pub fn reset(&self, name: &str) -> Result<usize, PermitError> {
        let entry = self
            .inner
            .resources
            .get(name)
            .map(|e| Arc::clone(&e))
            .ok_or_else(|| PermitError::UnknownResource(name.to_owned()))?;
        // The buckets as Watch lists them: the resource-wide one when it holds state of its
        // own, and every live partition.
        let mut live: Vec<Arc<str>> = entry
            .partitions
            .iter()
            .map(|b| Arc::clone(&b.key().0.key().partition))
            .collect();
        if !entry.def.per_partition || entry.shared_has_limits {
            live.push("".into());
        }
        self.put((*entry.def).clone());
        for p in &live {
            self.mark_learned(name, p);
        }
        Ok(live.len())
    }

    /// Remove a resource; its waiters are told it is gone.
    pub fn delete(&self, name: &str) -> bool {
        match self.inner.resources.remove(name) {
            Some((_, old)) => {
                self.inner.generation.fetch_add(1, Ordering::Release);
                close_entry(&old, || WaitOutcome::Deleted);
                self.count_resource(name, false);
                true
            }
            None => false,
        }
    }

    /// A resource's definition.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Arc<ResourceDef>> {
        self.inner.resources.get(name).map(|e| Arc::clone(&e.def))
    }

    /// Definitions whose name starts with `prefix` and sorts after `after`, in name order,
    /// at most `limit`.
    #[must_use]
    pub fn list(&self, prefix: &str, after: &str, limit: usize) -> Vec<Arc<ResourceDef>> {
        self.list_where(prefix, after, limit, |_| true)
    }

    /// [`Self::list`] of the names `keep` accepts (one tenant's).
    pub fn list_where(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<Arc<ResourceDef>> {
        let mut v: Vec<Arc<ResourceDef>> = self
            .inner
            .resources
            .iter()
            .filter(|e| e.key().starts_with(prefix) && e.key().as_str() > after && keep(e.key()))
            .map(|e| Arc::clone(&e.def))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.truncate(limit);
        v
    }

    /// A resource's definition, created from the template on first use like a permit's.
    pub fn definition(&self, name: &str) -> Result<Arc<ResourceDef>, PermitError> {
        self.entry(name).map(|e| Arc::clone(&e.def))
    }

    /// Count a grant or denial made elsewhere (the cluster engine), for metrics.
    pub fn count(&self, name: &str, outcome: Result<Option<Duration>, DenialReason>) {
        if let Some(e) = self.inner.resources.get(name) {
            match outcome {
                Ok(waited) => e.stats.granted(waited),
                Err(reason) => e.stats.denied(reason),
            }
        }
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, PermitError> {
        if let Some(e) = self.inner.resources.get(name) {
            return Ok(Arc::clone(&e));
        }
        let Some(t) = &self.inner.template else {
            return Err(PermitError::UnknownResource(name.to_owned()));
        };
        // A client naming new resources makes one per name: capped per tenant.
        self.check_new_resource(name)?;
        let mut def = t.clone();
        def.name = name.to_owned();
        let mut made = false;
        let e = Arc::clone(
            &self
                .inner
                .resources
                .entry(name.to_owned())
                .or_insert_with(|| {
                    made = true;
                    Arc::new(Entry::new(def, Arc::clone(&self.inner.generation)))
                }),
        );
        if made {
            self.inner.generation.fetch_add(1, Ordering::Release);
            self.count_resource(name, true);
        }
        Ok(e)
    }

    /// Live partitions a resource named `name` may have.
    fn partition_cap(&self, name: &str) -> usize {
        self.inner
            .caps
            .partitions(crate::auth::tenant::split(name).0)
    }

    /// A place in the queues for one caller of `resource`'s tenant, within the waiter caps.
    ///
    /// # Errors
    /// [`PermitError::Exhausted`] naming `max_waiters_per_tenant` or `max_waiters`.
    pub fn waiter_slot(&self, resource: &str) -> Result<super::caps::Held, PermitError> {
        let tenant = crate::auth::tenant::split(resource).0;
        let caps = &self.inner.caps;
        let (own, all) = (caps.waiters_of(tenant), caps.waiters);
        self.inner
            .waiters
            .take(tenant, own, all)
            .map_err(|full| match full {
                super::caps::Full::Tenant => PermitError::Exhausted {
                    cap: "max_waiters_per_tenant",
                    limit: own,
                    what: format!("{own} callers queued in this tenant"),
                },
                super::caps::Full::Total => PermitError::Exhausted {
                    cap: "max_waiters",
                    limit: all,
                    what: format!("{all} callers queued on this server"),
                },
            })
    }

    fn next_id(&self) -> (u64, u64) {
        (
            self.inner.seq.fetch_add(1, Ordering::Relaxed),
            crate::permits::id::random_tag(),
        )
    }

    /// Grant, queue or deny a permit.
    pub async fn acquire(&self, req: AcquireRequest<'_>) -> Result<AcquireOutcome, PermitError> {
        let clock = Arc::clone(&self.inner.clock);
        let start = clock.now();
        let deadline = start.saturating_add(nanos(req.max_wait));
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(PermitError::ShuttingDown);
            }
            let entry = self.entry(req.resource)?;
            let def = Arc::clone(&entry.def);
            let cost = resolve_cost(&def, req.cost)?;
            let lease_ns = nanos(req.lease.unwrap_or(def.lease));
            let (home, sec) =
                entry.buckets_or_create(req.partition, || self.partition_cap(&entry.name))?;
            let (key, rx, slot) = {
                let mut l = lock_pair(&home, sec.as_ref());
                if l.retired() {
                    continue;
                }
                let now = clock.now();
                let checked = l.home.check(l.sec.as_deref(), &cost, now);
                if checked == Err(Block::Never) {
                    return Err(never(&def, &cost));
                }
                if checked.is_ok() && l.home.may_bypass_queue(req.priority) {
                    let (seq, tag) = self.next_id();
                    let g = l
                        .home
                        .commit(l.sec.as_deref_mut(), cost, now, lease_ns, seq, tag);
                    let remaining = remaining(&l, now);
                    drop(l);
                    self.announce(&home, sec.as_ref());
                    entry.stats.granted(None);
                    return Ok(self.granted(def, &req, &g, start, remaining));
                }
                let block = checked.err();
                let max_queue = usize::try_from(def.max_queue).unwrap_or(usize::MAX);
                let reason = if now >= deadline {
                    Some(block_reason(block))
                } else if l.home.queue_len() >= max_queue {
                    Some(DenialReason::QueueFull)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    let wait = l.home.estimate_wait(l.sec.as_deref(), &cost, block, now);
                    l.home.denied_total = l.home.denied_total.saturating_add(1);
                    let remaining = remaining(&l, now);
                    drop(l);
                    self.announce(&home, None);
                    entry.stats.denied(reason);
                    return Ok(AcquireOutcome {
                        def,
                        result: Err(Denial {
                            reason,
                            retry_after: Duration::from_nanos(wait),
                        }),
                        waited: Duration::from_nanos(now.saturating_sub(start)),
                        remaining,
                    });
                }
                let slot = self.waiter_slot(&entry.name)?;
                let key: QueueKey = (std::cmp::Reverse(req.priority), self.next_id().0);
                let (tx, rx) = oneshot::channel();
                l.home.enqueue(key, Waiter { cost, lease_ns, tx });
                self.drain_locked(&mut l, &home, sec.as_ref(), now);
                (key, rx, slot)
            };
            let mut guard = WaitGuard {
                registry: self,
                home: &home,
                sec: sec.as_ref(),
                key,
                rx: Some(rx),
                _slot: slot,
            };
            let outcome = match guard.rx.as_mut() {
                Some(rx) => tokio::time::timeout_at(clock.instant(deadline).into(), rx).await,
                None => continue,
            };
            let outcome = match outcome {
                Ok(Ok(o)) => {
                    guard.rx = None;
                    o
                }
                // The sender vanished with its bucket: look the resource up again.
                Ok(Err(_)) => {
                    guard.rx = None;
                    continue;
                }
                Err(_elapsed) => match guard.time_out() {
                    TimedOut::Denied(retry_after) => {
                        let mut l = lock_pair(&home, sec.as_ref());
                        let now = clock.now();
                        l.home.denied_total = l.home.denied_total.saturating_add(1);
                        let remaining = remaining(&l, now);
                        drop(l);
                        self.announce(&home, None);
                        entry.stats.denied(DenialReason::QueueTimeout);
                        return Ok(AcquireOutcome {
                            def,
                            result: Err(Denial {
                                reason: DenialReason::QueueTimeout,
                                retry_after,
                            }),
                            waited: Duration::from_nanos(now.saturating_sub(start)),
                            remaining,
                        });
                    }
                    TimedOut::Answered(o) => o,
                },
            };
            match outcome {
                WaitOutcome::Granted(g) => {
                    let l = lock_pair(&home, sec.as_ref());
                    let remaining = remaining(&l, clock.now());
                    drop(l);
                    entry
                        .stats
                        .granted(Some(Duration::from_nanos(g.at.saturating_sub(start))));
                    return Ok(self.granted(def, &req, &g, start, remaining));
                }
                WaitOutcome::Replaced => {}
                WaitOutcome::Deleted => {
                    return Err(PermitError::UnknownResource(req.resource.to_owned()));
                }
                WaitOutcome::Shutdown => return Err(PermitError::ShuttingDown),
                WaitOutcome::Impossible => {
                    let cost = resolve_cost(&def, req.cost)?;
                    return Err(never(&def, &cost));
                }
            }
        }
    }

    fn granted(
        &self,
        def: Arc<ResourceDef>,
        req: &AcquireRequest<'_>,
        g: &Granted,
        start: Nanos,
        remaining: Vec<(usize, u64)>,
    ) -> AcquireOutcome {
        let permit_id = PermitId {
            resource: req.resource,
            partition: req.partition,
            seq: g.seq,
            tag: g.tag,
        }
        .encode();
        AcquireOutcome {
            def,
            result: Ok(GrantInfo {
                permit_id,
                lease_expires_at: self.inner.clock.wall(g.expires),
            }),
            waited: Duration::from_nanos(g.at.saturating_sub(start)),
            remaining,
        }
    }

    /// Drain a bucket's queue and arm its wake-up timer if the head must wait.
    fn drain_locked(
        &self,
        l: &mut Locked<'_>,
        home: &Arc<Bucket>,
        sec: Option<&Arc<Bucket>>,
        now: Nanos,
    ) {
        let wake = l.home.drain(l.sec.as_deref_mut(), now, || self.next_id());
        self.announce(home, sec);
        if let Some(at) = wake
            && l.home.timer_at().is_none_or(|t| at < t)
        {
            l.home.set_timer_at(Some(at));
            let registry = self.clone();
            let home = Arc::clone(home);
            let sec = sec.cloned();
            let when = self.inner.clock.instant(at);
            tokio::spawn(async move {
                tokio::time::sleep_until(when.into()).await;
                let mut l = lock_pair(&home, sec.as_ref());
                if l.home.timer_at() == Some(at) {
                    l.home.set_timer_at(None);
                }
                let now = registry.inner.clock.now();
                registry.drain_locked(&mut l, &home, sec.as_ref(), now);
            });
        }
    }

    /// The resources whose name starts with `prefix`, taken out of the map so no shard lock
    /// is held while their buckets are locked.
    fn entries(&self, prefix: &str) -> Vec<Arc<Entry>> {
        self.inner
            .resources
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| Arc::clone(&e))
            .collect()
    }

    /// Count an upstream answer reported for `resource` (unknown resources are ignored).
    pub fn count_upstream(&self, resource: &str, status: u32) {
        if let Some(e) = self.inner.resources.get(resource) {
            e.stats.upstream(status);
        }
    }

    /// Tell watchers a bucket (and its secondary) changed.
    fn announce(&self, home: &Bucket, sec: Option<&Arc<Bucket>>) {
        let hub = &self.inner.hub;
        hub.changed_with(!home.partition.as_str().is_empty(), || home.key());
        if let Some(s) = sec {
            hub.changed_with(!s.partition.as_str().is_empty(), || s.key());
        }
    }

    /// Release a permit. `NotFound` for an unknown or already released permit.
    pub fn release(&self, permit_id: &str, settlement: Settlement<'_>) -> Result<(), PermitError> {
        let id = id::parse(permit_id).ok_or(PermitError::MalformedPermit)?;
        self.release_id(&id, settlement).map(|_| ())
    }

    /// [`Self::release`] for an id the caller has already parsed.
    /// Returns when the permit was granted.
    pub fn release_id(
        &self,
        id: &PermitId<'_>,
        settlement: Settlement<'_>,
    ) -> Result<Nanos, PermitError> {
        let entry = self
            .inner
            .resources
            .get(id.resource)
            .map(|e| Arc::clone(&e))
            .ok_or(PermitError::UnknownPermit)?;
        let actual = match settlement {
            Settlement::Actual(m) => Some(resolve_actual(&entry.def, m)?),
            _ => None,
        };
        let settle = match (&settlement, &actual) {
            (Settlement::Refund, _) => Settle::Refund,
            (Settlement::Actual(_), Some(a)) => Settle::Actual(a),
            _ => Settle::Keep,
        };
        let (home, sec) = entry
            .buckets(id.partition)
            .ok_or(PermitError::UnknownPermit)?;
        let mut l = lock_pair(&home, sec.as_ref());
        let now = self.inner.clock.now();
        // A lease that has ended is gone whether or not the sweeper has reclaimed it yet:
        // its permit is NOT_FOUND and its cost stays taken.
        l.home.reclaim(now);
        let released = l
            .home
            .release(l.sec.as_deref_mut(), id.seq, id.tag, settle, now);
        self.drain_locked(&mut l, &home, sec.as_ref(), now);
        released.ok_or(PermitError::UnknownPermit)
    }

    /// How long until one request on (`resource`, `partition`) could be granted, with
    /// nothing else changing (every limit, block, cooldown, slot and the queue ahead):
    /// `None` when it could be now, or the resource is unknown.
    #[must_use]
    pub fn retry_wait(&self, resource: &str, partition: &str) -> Option<Duration> {
        let entry = self.inner.resources.get(resource).map(|e| Arc::clone(&e))?;
        let (home, sec) = entry.buckets(partition)?;
        let mut cost = vec![0; entry.def.dimensions.len()];
        *cost.first_mut()? = 1;
        let mut l = lock_pair(&home, sec.as_ref());
        let now = self.inner.clock.now();
        match l.home.check(l.sec.as_deref(), &cost, now) {
            Ok(()) if l.home.queue_len() == 0 => None,
            Err(Block::Never) => None,
            checked => Some(Duration::from_nanos(l.home.estimate_wait(
                l.sec.as_deref(),
                &cost,
                checked.err(),
                now,
            ))),
        }
    }

    /// Note that what the bucket of (`resource`, `partition`) learned changed, to be kept.
    pub fn mark_learned(&self, resource: &str, partition: &str) {
        self.inner
            .learned_dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((resource.to_owned(), partition.to_owned()));
    }

    /// The buckets marked since the last call.
    #[must_use]
    pub fn take_learned(&self) -> Vec<(String, String)> {
        let mut d = self
            .inner
            .learned_dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        d.drain().collect()
    }

    /// What the bucket of (`resource`, `partition`) learned, with its definition; `None`
    /// when the resource or the bucket is gone. Cooldowns as wall-clock instants.
    #[must_use]
    pub fn learned_state(
        &self,
        resource: &str,
        partition: &str,
    ) -> Option<(
        Arc<ResourceDef>,
        LearnedState,
        Option<std::time::SystemTime>,
    )> {
        let entry = self.inner.resources.get(resource).map(|e| Arc::clone(&e))?;
        let (home, _) = entry.buckets(partition)?;
        let now = self.inner.clock.now();
        let s = home.lock().learned_state(now);
        let wall = (s.cooldown_until > now).then(|| self.inner.clock.wall(s.cooldown_until));
        Some((Arc::clone(&entry.def), s, wall))
    }

    /// Put back what the bucket of (`resource`, `partition`) learned before a restart; a
    /// cooldown given as a wall-clock instant (already over: ignored).
    pub fn restore_learned(
        &self,
        resource: &str,
        partition: &str,
        mut s: LearnedState,
        cooldown: Option<std::time::SystemTime>,
    ) -> Result<(), PermitError> {
        let clock = Arc::clone(&self.inner.clock);
        s.cooldown_until = cooldown
            .and_then(|at| at.duration_since(clock.wall(clock.now())).ok())
            .map_or(0, |left| clock.now().saturating_add(nanos(left)));
        self.update_bucket(resource, partition, |def, b, now| b.restore(&s, def, now))
    }

    /// After a restart: every bucket there is starts empty and refills at its limits' rate,
    /// rather than full, since nothing says what the upstream granted just before (a full
    /// burst against an upstream that is empty would be refused whole).
    pub fn resume_empty(&self) {
        for e in self.entries("") {
            for b in e.all_buckets() {
                let now = self.inner.clock.now();
                b.lock().empty_limits(now);
            }
        }
    }

    /// A permit was released as used with no outcome reported: slow start counts the call.
    pub fn completed_unreported(&self, id: &PermitId<'_>) {
        let Some(entry) = self
            .inner
            .resources
            .get(id.resource)
            .map(|e| Arc::clone(&e))
        else {
            return;
        };
        if let Some((home, sec)) = entry.buckets(id.partition) {
            let mut l = lock_pair(&home, sec.as_ref());
            if l.home.is_probing() {
                let now = self.inner.clock.now();
                l.home.completed_unreported();
                self.drain_locked(&mut l, &home, sec.as_ref(), now);
            }
        }
    }

    /// Take `requests` (the `requests` dimension) at once, without a lease, or say it does
    /// not fit now: a gateway's hit
    /// (Envoy's ShouldRateLimit), which has nothing to release later. Queued callers keep
    /// their turn: with a queue in front it does not fit. `remaining` is after the take.
    ///
    /// # Errors
    /// Unknown resource, a cost no limit could ever grant, the partition cap.
    pub fn take(
        &self,
        resource: &str,
        partition: &str,
        requests: u64,
    ) -> Result<Taken, PermitError> {
        let entry = self.entry(resource)?;
        let cost = requests_cost(&entry.def, requests);
        let (home, sec) = entry.buckets_or_create(partition, || self.partition_cap(&entry.name))?;
        let mut l = lock_pair(&home, sec.as_ref());
        let now = self.inner.clock.now();
        let checked = l.home.check(l.sec.as_deref(), &cost, now);
        if checked == Err(Block::Never) {
            return Err(never(&entry.def, &cost));
        }
        let taken = checked.is_ok() && l.home.may_bypass_queue(0);
        if taken {
            l.home.charge(&cost, now);
            if let Some(s) = l.sec.as_mut() {
                s.charge(&cost, now);
            }
            l.home.granted_total = l.home.granted_total.saturating_add(1);
        } else {
            l.home.denied_total = l.home.denied_total.saturating_add(1);
        }
        let remaining = remaining(&l, now);
        drop(l);
        self.announce(&home, sec.as_ref());
        if taken {
            entry.stats.granted(None);
        } else {
            entry.stats.denied(block_reason(checked.err()));
        }
        Ok(Taken {
            def: Arc::clone(&entry.def),
            taken,
            remaining,
        })
    }

    /// Give back what [`Self::take`] took (a request refused by another of its limits).
    ///
    /// # Errors
    /// Unknown resource.
    pub fn untake(
        &self,
        resource: &str,
        partition: &str,
        requests: u64,
    ) -> Result<(), PermitError> {
        let entry = self.entry(resource)?;
        let cost = requests_cost(&entry.def, requests);
        let Some((home, sec)) = entry.buckets(partition) else {
            return Ok(());
        };
        let mut l = lock_pair(&home, sec.as_ref());
        let now = self.inner.clock.now();
        l.home.refund(&cost, now);
        if let Some(s) = l.sec.as_mut() {
            s.refund(&cost, now);
        }
        drop(l);
        self.announce(&home, sec.as_ref());
        Ok(())
    }

    /// Charge the cost of a call made without a permit (ReportOutcome without `permit_id`).
    pub fn charge(
        &self,
        resource: &str,
        partition: &str,
        actual: &HashMap<String, u64>,
    ) -> Result<(), PermitError> {
        let entry = self.entry(resource)?;
        let cost = resolve_actual(&entry.def, actual)?;
        if cost.iter().all(Option::is_none) {
            return Ok(());
        }
        let cost: Vec<u64> = cost.iter().map(|c| c.unwrap_or(0)).collect();
        let (home, sec) = entry.buckets_or_create(partition, || self.partition_cap(&entry.name))?;
        let mut l = lock_pair(&home, sec.as_ref());
        let now = self.inner.clock.now();
        l.home.charge(&cost, now);
        self.announce(&home, sec.as_ref());
        if let Some(s) = l.sec.as_mut() {
            s.charge(&cost, now);
        }
        Ok(())
    }

    /// Run `f` on the home bucket of (`resource`, `partition`), creating it if needed, then
    /// serve its queue: header feedback changes a bucket through this (cooldowns, learned
    /// limits, corrections), under the same lock as grants.
    pub fn update_bucket<R>(
        &self,
        resource: &str,
        partition: &str,
        f: impl FnOnce(&ResourceDef, &mut BucketState, Nanos) -> R,
    ) -> Result<R, PermitError> {
        loop {
            let entry = self.entry(resource)?;
            let (home, sec) =
                entry.buckets_or_create(partition, || self.partition_cap(&entry.name))?;
            let mut l = lock_pair(&home, sec.as_ref());
            if l.retired() {
                continue;
            }
            let now = self.inner.clock.now();
            let out = f(&entry.def, &mut l.home, now);
            self.drain_locked(&mut l, &home, sec.as_ref(), now);
            return Ok(out);
        }
    }

    /// Reclaim expired leases everywhere and drop idle partition buckets (memory stays
    /// bounded by live partitions). Returns (leases reclaimed, buckets dropped).
    pub fn sweep(&self) -> (usize, usize) {
        let entries = self.entries("");
        let (mut reclaimed, mut dropped) = (0, 0);
        for entry in entries {
            for b in entry.all_buckets() {
                let now = self.inner.clock.now();
                let mut st = b.lock();
                let n = st.reclaim(now);
                // Queues are drained when a lease is reclaimed, so a waiter behind an expired
                // lease is woken even if no timer was armed for it.
                if n > 0 && st.queue_len() > 0 {
                    drop(st);
                    self.wake(&entry, &b);
                }
                reclaimed += n;
            }
            let now = self.inner.clock.now();
            entry.partitions.retain(|b, ()| {
                let mut st = b.0.lock();
                if st.is_idle(now) && st.timer_at().is_none() {
                    st.retired = true;
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        if dropped > 0 {
            self.inner.generation.fetch_add(1, Ordering::Release);
        }
        (reclaimed, dropped)
    }

    fn wake(&self, entry: &Entry, bucket: &Arc<Bucket>) {
        // Only home buckets have queues: the shared one of a resource that is not per
        // partition (no secondary), or a partition's (the shared one is its secondary).
        let sec = if Arc::ptr_eq(bucket, &entry.shared) {
            None
        } else {
            entry.secondary()
        };
        let mut l = lock_pair(bucket, sec.as_ref());
        let now = self.inner.clock.now();
        self.drain_locked(&mut l, bucket, sec.as_ref(), now);
    }

    /// Live bucket count (resources' shared buckets plus partition buckets).
    #[must_use]
    pub fn bucket_count(&self) -> usize {
        self.inner
            .resources
            .iter()
            .map(|e| 1 + e.partitions.len())
            .sum()
    }

    /// Stop: every waiter is answered `ShuttingDown` and new acquires are refused.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for e in self.entries("") {
            close_entry(&e, || WaitOutcome::Shutdown);
        }
    }
}

fn close_entry(entry: &Entry, outcome: fn() -> WaitOutcome) {
    for b in entry.all_buckets() {
        b.lock().close_queue(outcome);
    }
}

fn block_reason(block: Option<Block>) -> DenialReason {
    match block {
        Some(Block::Concurrency { .. }) => DenialReason::ConcurrencyLimited,
        Some(Block::Cooldown { .. }) => DenialReason::Cooldown,
        // Capacity reserved for queued callers counts as rate limited.
        _ => DenialReason::RateLimited,
    }
}

fn remaining(l: &Locked<'_>, now: Nanos) -> Vec<(usize, u64)> {
    let mut out: Vec<(usize, u64)> = Vec::new();
    let slots = l
        .home
        .limits
        .iter()
        .chain(l.sec.iter().flat_map(|s| s.limits.iter()));
    for s in slots {
        let a = s.state.available(now);
        match out.iter_mut().find(|(d, _)| *d == s.dimension()) {
            Some((_, r)) => *r = (*r).min(a),
            None => out.push((s.dimension(), a)),
        }
    }
    out
}

#[path = "registry_summary.rs"]
mod summary;
#[path = "registry_views.rs"]
mod views;
#[path = "registry_wait.rs"]
mod wait;
use wait::{TimedOut, WaitGuard};

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
