//! The read side of the registry: one bucket's state (GetQuota), every bucket's (the Watch
//! snapshot) and per-resource aggregates (metrics). A child of the registry so it can lock
//! buckets the same way the permit path does.

use std::sync::Arc;
use std::time::Duration;

use super::{Bucket, Locked, Registry, lock_pair};
use crate::clock::Nanos;
use crate::permits::PermitError;
use crate::permits::adaptive::{Adaptive, Step};
use crate::permits::answer::{DimensionView, QuotaView, ResourceMetrics};
use crate::permits::bucket::Basis;
use crate::permits::resource::{Origin, ResourceDef, Scope};

impl Registry {
    /// Per resource: definition, counters and the aggregate state of its buckets, for
    /// metrics (partitions are summed, never labels).
    #[must_use]
    pub fn metrics(&self) -> Vec<ResourceMetrics> {
        let entries = self.entries("");
        let mut out: Vec<ResourceMetrics> = entries
            .into_iter()
            .map(|e| {
                let now = self.inner.clock.now();
                let mut m = ResourceMetrics {
                    def: Arc::clone(&e.def),
                    stats: Arc::clone(&e.stats),
                    dimensions: Vec::new(),
                    in_flight: 0,
                    queue_depth: 0,
                    cooldown_remaining: Duration::ZERO,
                    buckets: 0,
                    probing: 0,
                };
                // Partitions come from the shared ranking (at most 250 ms old): a resource
                // of 10^5 partitions must not be read in full per scrape and per page.
                let mut count = |st: &super::super::bucket::BucketState| {
                    m.buckets += 1;
                    m.probing += u64::from(st.is_probing());
                    m.in_flight += u64::from(st.in_flight());
                    m.queue_depth += u64::try_from(st.queue_len()).unwrap_or(u64::MAX);
                    m.cooldown_remaining = m.cooldown_remaining.max(Duration::from_nanos(
                        st.cooldown_until().saturating_sub(now),
                    ));
                };
                count(&e.shared.lock());
                if e.def.per_partition {
                    let t = self.ranking_of(&e).totals("");
                    m.buckets += t.partitions;
                    m.probing += t.probing;
                    m.in_flight += t.in_flight;
                    m.queue_depth += t.queued;
                    m.cooldown_remaining = m
                        .cooldown_remaining
                        .max(Duration::from_nanos(t.cooldown_until.saturating_sub(now)));
                }
                // Limit and remaining of the resource-wide bucket; per-partition limits are
                // shown by GetQuota and Watch.
                let l = lock_pair(&e.shared, None);
                m.dimensions = self.view(&e.def, &l, now).dimensions;
                m
            })
            .collect();
        out.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        out
    }

    /// Every resource's counters, by name (cheap: no bucket is read).
    #[must_use]
    pub fn stats(&self) -> Vec<(String, Arc<super::super::stats::ResourceStats>)> {
        self.inner
            .resources
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(&e.stats)))
            .collect()
    }

    /// The keys of every bucket whose resource starts with `prefix`, sorted by (resource,
    /// partition): what a Watch snapshot walks, reading each bucket's state only when it
    /// sends it. The list of all keys is rebuilt only when the set of buckets changed and is
    /// shared (an `Arc`) by every snapshot meanwhile, so a subscriber costs a pointer into
    /// it, not a copy of every bucket's state (300 subscribers of 20 000 partitions once
    /// took the server to 2.8 GiB).
    #[must_use]
    pub fn bucket_keys(&self, prefix: &str) -> (super::BucketKeys, std::ops::Range<usize>) {
        let all = {
            let mut cache = self
                .inner
                .keys_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Read before the walk: a bucket made during it bumps past this, so the next
            // caller rebuilds rather than miss it.
            let generation = self
                .inner
                .generation
                .load(std::sync::atomic::Ordering::Acquire);
            match &*cache {
                Some((g, keys)) if *g == generation => Arc::clone(keys),
                _ => {
                    let keys = self.all_keys();
                    *cache = Some((generation, Arc::clone(&keys)));
                    keys
                }
            }
        };
        // A prefix's keys are a contiguous run of the sorted list: a range into the shared
        // list, never a copy of it.
        let from = all.partition_point(|k| &*k.resource < prefix);
        let to = from + all[from..].partition_point(|k| k.resource.starts_with(prefix));
        (all, from..to)
    }

    fn all_keys(&self) -> super::BucketKeys {
        let mut out = Vec::new();
        for e in self.entries("") {
            if !e.def.per_partition || e.shared_has_limits {
                out.push(e.shared.key());
            }
            out.extend(e.partitions.iter().map(|b| b.key().0.key()));
        }
        out.sort_by(|a, b| (&a.resource, &a.partition).cmp(&(&b.resource, &b.partition)));
        out.into()
    }

    /// The state of one bucket (a fresh view when the partition has none yet).
    pub fn quota(&self, resource: &str, partition: &str) -> Result<QuotaView, PermitError> {
        let entry = self
            .inner
            .resources
            .get(resource)
            .map(|e| Arc::clone(&e))
            .ok_or_else(|| PermitError::UnknownResource(resource.to_owned()))?;
        let now = self.inner.clock.now();
        let view = |l: &Locked<'_>| self.view(&entry.def, l, now);
        match entry.buckets(partition) {
            Some((home, sec)) => {
                let mut l = lock_pair(&home, sec.as_ref());
                // Leases are reclaimed lazily (on the next check, or by the sweeper): an
                // expired one must not show as in flight. A waiter behind it is served now.
                if l.home.reclaim(now) > 0 {
                    self.drain_locked(&mut l, &home, sec.as_ref(), now);
                }
                Ok(view(&l))
            }
            None => {
                // No bucket yet: show what a fresh one would hold, without creating it.
                let home = Bucket::new(&entry.def, Scope::Partition, &entry.name, partition);
                let sec = entry.secondary();
                Ok(view(&lock_pair(&home, sec.as_ref())))
            }
        }
    }

    fn view(&self, def: &Arc<ResourceDef>, l: &Locked<'_>, now: Nanos) -> QuotaView {
        let clock = &self.inner.clock;
        let mut dims: Vec<DimensionView> = Vec::new();
        let slots = l
            .home
            .limits
            .iter()
            .chain(l.sec.iter().flat_map(|s| s.limits.iter()));
        for slot in slots {
            let rate = slot.state.rate();
            let mut v = DimensionView {
                dimension: slot.dimension(),
                limit: rate.amount,
                period: Duration::from_nanos(rate.period_ns),
                remaining: slot.state.available(now),
                reset_at: clock.wall(slot.state.full_at().max(now)),
                learned: slot.origin == Origin::Learned,
                source: slot.origin,
                reason: reason(def, slot.basis, l.home.adaptive()),
                rate_per_second: rate.per_second(),
            };
            // A block the upstream imposed (0 remaining until its reset) is what the
            // dimension has now, whatever the limit's own state says.
            if let Some((until, why)) = l.home.block_of(v.dimension).filter(|(u, _)| *u > now) {
                v.remaining = 0;
                v.reset_at = clock.wall(until);
                v.reason = if why.is_empty() {
                    "blocked: the upstream said 0 remaining, until its reset".to_owned()
                } else {
                    why.to_owned()
                };
            }
            match dims.iter_mut().find(|d| d.dimension == v.dimension) {
                // The tightest limit wins; on a tie the learned one, since it is what the
                // upstream itself says.
                Some(d)
                    if v.remaining < d.remaining
                        || (v.remaining == d.remaining && v.learned && !d.learned) =>
                {
                    *d = v;
                }
                Some(_) => {}
                None => dims.push(v),
            }
        }
        QuotaView {
            def: Arc::clone(def),
            dimensions: dims,
            in_flight: l.home.in_flight(),
            concurrency: l.home.concurrency,
            queue_depth: u32::try_from(l.home.queue_len()).unwrap_or(u32::MAX),
            granted_total: l.home.granted_total,
            denied_total: l.home.denied_total,
            cooldown_until: (l.home.cooldown_until() > now)
                .then(|| clock.wall(l.home.cooldown_until())),
            upstream_429_total: l.home.upstream_429_total(),
            at: clock.wall(now),
            probing: l.home.is_probing(),
            cooldown_reason: if l.home.cooldown_until() > now {
                l.home.cooldown_why().to_owned()
            } else {
                String::new()
            },
        }
    }
}

/// Why a limit is what it is, in words (GetQuota, Watch, the dashboard).
fn reason(def: &ResourceDef, basis: Basis, adaptive: Option<&Adaptive>) -> String {
    match basis {
        Basis::Configured if def.limits_known => "configured (known)".to_owned(),
        Basis::Configured => "configured guess (limits_known is false)".to_owned(),
        Basis::StatedWindow => "learned: limit and window stated by the upstream".to_owned(),
        Basis::FittedWindow => "learned: window fitted from the upstream's reset".to_owned(),
        Basis::ProbedWindow => "learned: the upstream's resets are whole seconds, too coarse \
                                for its refill; the window is the shortest pace that held when \
                                tried (a 429 at a tried pace goes back)"
            .to_owned(),
        Basis::ConfiguredWindow => {
            "learned: the configured window (the upstream stated none)".to_owned()
        }
        Basis::DialectWindow => "learned: the dialect's usual window (none stated)".to_owned(),
        Basis::Adaptive => match adaptive.map(|a| (a.step, a.estimate_milli)) {
            Some((Step::Cut, est)) => format!(
                "adaptive: cut to 17/20 of the {:.2}/s that succeeded in the second before a \
                 429 without rate-limit headers, growing 1 %/s while calls succeed",
                milli_f64(est)
            ),
            _ => "adaptive: slow-start ramp (no rate-limit headers seen), \
                  +1/s per success until a 429"
                .to_owned(),
        },
    }
}

#[allow(clippy::cast_precision_loss)]
fn milli_f64(m: u64) -> f64 {
    m as f64 / 1000.0
}
