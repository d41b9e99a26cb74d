//! The registry's side of [`super::super::summary`]: reading every partition of a resource
//! into its shared ranking, at most once per [`REFRESH`](crate::permits::summary::REFRESH) (or longer, see [`Ranking::fresh_for`]), and cutting summaries and pages
//! from it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Entry, Registry};
use crate::clock::Nanos;
use crate::permits::PermitError;
use crate::permits::bucket::BucketState;
use crate::permits::summary::{Order, PartitionPage, Ranking, Row, SummaryView};

/// The shared ranking of one resource and whether someone is reading a new one.
#[derive(Debug, Default)]
pub(super) struct RankingCell {
    current: std::sync::Mutex<Option<Arc<Ranking>>>,
    busy: std::sync::atomic::AtomicBool,
}

/// One bucket's row (state read under its lock).
fn row(partition: Arc<str>, st: &BucketState, now: Nanos) -> Row {
    let mut share = 1.0f32;
    for slot in st.limits.iter() {
        let rate = slot.state.rate();
        let blocked = st
            .block_of(slot.dimension())
            .is_some_and(|(until, _)| until > now);
        let left = if blocked {
            0.0
        } else if rate.burst == 0 {
            1.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let f = slot.state.available(now) as f32 / rate.burst as f32;
            f
        };
        share = share.min(left);
    }
    if st.concurrency > 0 {
        #[allow(clippy::cast_precision_loss)]
        let used = st.in_flight() as f32 / st.concurrency as f32;
        share = share.min(1.0 - used.min(1.0));
    }
    Row {
        partition,
        share,
        queue: u32::try_from(st.queue_len()).unwrap_or(u32::MAX),
        in_flight: st.in_flight(),
        cooling: st.cooldown_until() > now,
        cooldown_until: if st.cooldown_until() > now {
            st.cooldown_until()
        } else {
            0
        },
        probing: st.is_probing(),
        granted: st.granted_total,
        denied: st.denied_total,
        upstream_429: st.upstream_429_total(),
        granted_delta: 0,
        denied_delta: 0,
    }
}

impl Registry {
    /// The shared ranking of `resource`'s live partitions, read anew when older than
    /// [`Ranking::fresh_for`] ([`REFRESH`](crate::permits::summary::REFRESH), longer when reading it is costly). While one
    /// caller reads it anew the others get the previous one rather than wait (a read of
    /// 10^5 partitions takes milliseconds; no thread should block on it), so a ranking may
    /// be up to one read older than that.
    pub fn ranking(&self, resource: &str) -> Result<Arc<Ranking>, PermitError> {
        let entry = self.entry(resource)?;
        Ok(self.ranking_of(&entry))
    }

    pub(super) fn ranking_of(&self, entry: &Entry) -> Arc<Ranking> {
        let cell = &entry.ranking;
        let now = self.inner.clock.now();

        let prev = cell
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(p) = &prev
            && u128::from(now.saturating_sub(p.read_at)) < p.fresh_for().as_nanos()
        {
            return Arc::clone(p);
        }
        let claimed = cell
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !claimed && let Some(p) = prev {
            return p;
        }
        let started = std::time::Instant::now();
        let mut next = self.read_ranking(entry, prev.as_deref());
        next.cost = started.elapsed();
        let next = Arc::new(next);
        *cell
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&next));
        if claimed {
            cell.busy.store(false, Ordering::Release);
        }
        next
    }

    fn read_ranking(&self, entry: &Entry, prev: Option<&Ranking>) -> Ranking {
        let now = self.inner.clock.now();
        let rows: Vec<Row> = entry
            .partitions
            .iter()
            .map(|b| {
                let bucket = &b.key().0;
                let st = bucket.lock();
                row(bucket.partition.to_shared(), &st, now)
            })
            .collect();
        Ranking::new(rows, now, self.inner.clock.wall(now), prev)
    }

    /// `resource` at a glance: its resource-wide bucket, totals over the live partitions
    /// whose name starts with `prefix`, and the `top` of them under most pressure.
    pub fn summary(
        &self,
        resource: &str,
        prefix: &str,
        top: usize,
    ) -> Result<SummaryView, PermitError> {
        let entry = self.entry(resource)?;
        let ranking = self.ranking_of(&entry);
        let totals = ranking.totals(prefix);
        let (granted_per_second, denied_per_second) = ranking.rates(&totals);
        let shared = if !entry.def.per_partition || entry.shared_has_limits {
            Some(self.quota(resource, "")?)
        } else {
            None
        };
        let top = self.read_rows(resource, &ranking.top(prefix, 0, top));
        Ok(SummaryView {
            shared,
            totals,
            granted_per_second,
            denied_per_second,
            window: ranking.window,
            top,
            at: ranking.at,
            version: ranking.version,
        })
    }

    /// A page of `resource`'s live partitions under `prefix`: up to `n` of them after
    /// `after` (a partition name for [`Order::Name`], a count for [`Order::Pressure`]),
    /// each read now, and how many match in all. Pressure order is that of the shared
    /// ranking, so paging through it is as of one ranking only while that one lasts.
    pub fn partitions(
        &self,
        resource: &str,
        prefix: &str,
        order: Order,
        after: &str,
        n: usize,
    ) -> Result<PartitionPage, PermitError> {
        let entry = self.entry(resource)?;
        let ranking = self.ranking_of(&entry);
        let range = ranking.range(prefix);
        let total = u64::try_from(range.len()).unwrap_or(u64::MAX);
        let rows: Vec<&Row> = match order {
            Order::Name => {
                let all = &ranking.rows[range];
                let from = all.partition_point(|r| &*r.partition <= after);
                all[from..].iter().take(n + 1).collect()
            }
            Order::Pressure => {
                let skip = after.parse::<usize>().unwrap_or(0);
                ranking.top(prefix, skip, n + 1)
            }
        };
        let more = rows.len() > n;
        Ok((
            self.read_rows(resource, &rows[..rows.len().min(n)]),
            more,
            total,
        ))
    }

    /// Each row's bucket read in full now (one dropped since the ranking reads as fresh).
    fn read_rows(
        &self,
        resource: &str,
        rows: &[&Row],
    ) -> Vec<(Arc<str>, crate::permits::QuotaView)> {
        rows.iter()
            .filter_map(|r| {
                let v = self.quota(resource, &r.partition).ok()?;
                Some((Arc::clone(&r.partition), v))
            })
            .collect()
    }
}
