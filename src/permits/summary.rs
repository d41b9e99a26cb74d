//! Views of a resource with many partitions: totals over its live partitions and the
//! partitions under most pressure, for GetSummary, WatchSummaries, ListPartitions and the
//! dashboard.
//!
//! Why this shape: a resource may have 10^5 live partitions (one per end user or API key)
//! and be watched by 10^3 dashboards and tools. So every partition is read once per
//! [`REFRESH`] at most (less often when that read is costly: the views of a resource take
//! at most about 1/[`COST_FACTOR`] of a core), into one shared [`Ranking`] (compact rows,
//! sorted by name, totals, and the [`MAX_TOP`] most pressed found in linear time), whoever
//! asks and however many ask; a summary or a page is then cut from that ranking, and only
//! the few partitions it names are read in full.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::answer::QuotaView;

/// Shortest a ranking is reused before the partitions are read again.
pub const REFRESH: Duration = Duration::from_millis(250);
/// Longest a ranking is reused (see [`Ranking::fresh_for`]).
pub const MAX_REFRESH: Duration = Duration::from_secs(2);
/// A ranking is reused for at least this many times what reading it cost, so the views of
/// a resource take at most about 1/40 of one core, however many watch it.
pub const COST_FACTOR: u32 = 40;
/// Prefixes whose totals a ranking remembers (a dashboard's search, a tool's filter).
const PREFIX_MEMO: usize = 16;
/// A partition is near empty when what is left of its tightest limit is at most this share.
pub const NEAR_EMPTY: f32 = 0.1;
/// Most partitions a summary names.
pub const MAX_TOP: usize = 100;
/// Partitions a summary names when the request gives no number.
pub const DEFAULT_TOP: usize = 10;

/// One live partition, as ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The partition.
    pub partition: Arc<str>,
    /// What is left of its tightest limit, 0 to 1 (concurrency included; 1 when nothing
    /// limits it; 0 while the upstream blocks it).
    pub share: f32,
    /// Callers waiting.
    pub queue: u32,
    /// Leases held.
    pub in_flight: u32,
    /// Paused after an upstream 429/503.
    pub cooling: bool,
    /// Until when (the registry's clock; 0 without a pause).
    pub cooldown_until: u64,
    /// In slow start.
    pub probing: bool,
    /// Grants since the bucket was made.
    pub granted: u64,
    /// Denials since the bucket was made.
    pub denied: u64,
    /// Upstream 429s reported.
    pub upstream_429: u64,
    /// Grants since the previous ranking (all of them for a partition new since).
    pub granted_delta: u64,
    /// Denials since the previous ranking.
    pub denied_delta: u64,
}

impl Row {
    /// Most pressed first: paused, then the longest queue, then the least left, then the
    /// most denials, then the most in flight. Ties keep name order (the caller's).
    #[must_use]
    pub fn pressure(a: &Self, b: &Self) -> Ordering {
        b.cooling
            .cmp(&a.cooling)
            .then(b.queue.cmp(&a.queue))
            .then(a.share.total_cmp(&b.share))
            .then(b.denied.cmp(&a.denied))
            .then(b.in_flight.cmp(&a.in_flight))
    }

    /// Whether the partition is near empty.
    #[must_use]
    pub fn near_empty(&self) -> bool {
        self.share <= NEAR_EMPTY
    }
}

/// Every live partition of one resource, read at one instant, shared by every reader.
#[derive(Debug)]
pub struct Ranking {
    /// The rows, in partition name order.
    pub rows: Vec<Row>,
    /// Indices into `rows` of the [`MAX_TOP`] most pressed, most pressed first: what every
    /// summary names, found in linear time.
    head: Vec<u32>,
    /// Indices into `rows`, most pressed first: sorted on the first request that needs
    /// more than `head` (a prefix's top, a page by pressure).
    by_pressure: std::sync::OnceLock<Vec<u32>>,
    /// When it was read (the registry's clock).
    pub read_at: u64,
    /// The same instant, as wall time.
    pub at: SystemTime,
    /// Time since the previous ranking, over which the deltas were counted (zero for the
    /// first one).
    pub window: Duration,
    /// Counts rankings of this resource: a reader that saw this version has seen it all.
    pub version: u64,
    /// What reading the partitions cost (set by the reader; zero when unknown).
    pub cost: Duration,
    /// Totals over every row: what most summaries ask for, summed once.
    all: Totals,
    /// Totals under a few prefixes, summed once each.
    by_prefix: std::sync::Mutex<Vec<(Box<str>, Totals)>>,
}

/// [`Row::pressure`] between two rows of `rows` (in name order), ties by name: a total
/// order, so a selection and a sort agree.
fn pressed(rows: &[Row], a: u32, b: u32) -> Ordering {
    Row::pressure(&rows[a as usize], &rows[b as usize]).then(a.cmp(&b))
}

/// A name's first 16 bytes as a number that sorts as the names do.
fn name_key(name: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = name.len().min(16);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// Sums over a set of partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Live partitions.
    pub partitions: u64,
    /// Leases held.
    pub in_flight: u64,
    /// Callers waiting.
    pub queued: u64,
    /// Partitions near empty ([`NEAR_EMPTY`]).
    pub near_empty: u64,
    /// Partitions paused after an upstream 429/503.
    pub cooling: u64,
    /// The latest end of a partition's pause (the registry's clock; 0 without one).
    pub cooldown_until: u64,
    /// Partitions in slow start.
    pub probing: u64,
    /// Grants of the live partitions.
    pub granted: u64,
    /// Denials of the live partitions.
    pub denied: u64,
    /// Upstream 429s of the live partitions.
    pub upstream_429: u64,
    /// Grants over the ranking's window.
    pub granted_delta: u64,
    /// Denials over the ranking's window.
    pub denied_delta: u64,
}

impl Totals {
    /// Add one partition.
    pub fn add(&mut self, r: &Row) {
        self.partitions += 1;
        self.in_flight += u64::from(r.in_flight);
        self.queued += u64::from(r.queue);
        self.near_empty += u64::from(r.near_empty());
        self.cooling += u64::from(r.cooling);
        self.cooldown_until = self.cooldown_until.max(r.cooldown_until);
        self.probing += u64::from(r.probing);
        self.granted = self.granted.saturating_add(r.granted);
        self.denied = self.denied.saturating_add(r.denied);
        self.upstream_429 = self.upstream_429.saturating_add(r.upstream_429);
        self.granted_delta = self.granted_delta.saturating_add(r.granted_delta);
        self.denied_delta = self.denied_delta.saturating_add(r.denied_delta);
    }
}

impl Ranking {
    /// A ranking of `rows` (any order): sorts them by name, counts each one's grants and
    /// denials since `prev`, and indexes them by pressure.
    #[must_use]
    pub fn new(rows: Vec<Row>, read_at: u64, at: SystemTime, prev: Option<&Ranking>) -> Self {
        // Sort keys and indices, then move each row once: rows are ~100 bytes, and
        // swapping them through a sort of 10^5 was most of a ranking's cost.
        // The key is a name's first 16 bytes, zero-padded, big-endian: integer compares in
        // one array instead of chasing every name (names hold no NUL, so padding sorts a
        // name before its extensions); only names that share 16 bytes compare in full.
        let mut order: Vec<(u128, u32)> = rows
            .iter()
            .zip(0..u32::try_from(rows.len()).unwrap_or(u32::MAX))
            .map(|(r, i)| (name_key(&r.partition), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                rows[a.1 as usize]
                    .partition
                    .cmp(&rows[b.1 as usize].partition)
            })
        });
        let mut slots: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
        let mut rows: Vec<Row> = order
            .iter()
            .filter_map(|&(_, i)| slots.get_mut(i as usize).and_then(Option::take))
            .collect();
        let window = prev.map_or(Duration::ZERO, |p| {
            Duration::from_nanos(read_at.saturating_sub(p.read_at))
        });
        // Both lists are in name order: one merge walk finds each row's previous counts.
        let old = prev.map_or(&[][..], |p| p.rows.as_slice());
        let mut j = 0;
        for r in &mut rows {
            while old.get(j).is_some_and(|o| o.partition < r.partition) {
                j += 1;
            }
            let (g, d) = match old.get(j) {
                // Counters only grow while a bucket lives; smaller means it was made anew.
                Some(o) if o.partition == r.partition && o.granted <= r.granted => {
                    (o.granted, o.denied.min(r.denied))
                }
                _ => (0, 0),
            };
            r.granted_delta = r.granted - g;
            r.denied_delta = r.denied - d;
        }
        let mut head: Vec<u32> = (0..u32::try_from(rows.len()).unwrap_or(u32::MAX)).collect();
        let cmp = |a: &u32, b: &u32| pressed(&rows, *a, *b);
        if head.len() > MAX_TOP {
            head.select_nth_unstable_by(MAX_TOP - 1, cmp);
            head.truncate(MAX_TOP);
        }
        head.sort_unstable_by(cmp);
        let mut all = Totals::default();
        for r in &rows {
            all.add(r);
        }
        Self {
            rows,
            head,
            by_pressure: std::sync::OnceLock::new(),
            read_at,
            at,
            window,
            version: prev.map_or(1, |p| p.version + 1),
            cost: Duration::ZERO,
            all,
            by_prefix: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// How long this ranking serves before the partitions are read again: [`REFRESH`], or
    /// [`COST_FACTOR`] times what reading it cost, at most [`MAX_REFRESH`].
    #[must_use]
    pub fn fresh_for(&self) -> Duration {
        (self.cost * COST_FACTOR).clamp(REFRESH, MAX_REFRESH)
    }

    /// The rows whose partition starts with `prefix` (a contiguous run of the name order).
    #[must_use]
    pub fn range(&self, prefix: &str) -> std::ops::Range<usize> {
        let from = self.rows.partition_point(|r| &*r.partition < prefix);
        let len = self.rows[from..].partition_point(|r| r.partition.starts_with(prefix));
        from..from + len
    }

    /// Sums over the partitions under `prefix`.
    #[must_use]
    pub fn totals(&self, prefix: &str) -> Totals {
        if prefix.is_empty() {
            return self.all;
        }
        let mut memo = self
            .by_prefix
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, t)) = memo.iter().find(|(p, _)| &**p == prefix) {
            return *t;
        }
        let mut t = Totals::default();
        for r in &self.rows[self.range(prefix)] {
            t.add(r);
        }
        if memo.len() == PREFIX_MEMO {
            memo.remove(0);
        }
        memo.push((prefix.into(), t));
        t
    }

    /// The `n` partitions under `prefix` under most pressure, most pressed first, skipping
    /// the first `skip` of them.
    #[must_use]
    pub fn top(&self, prefix: &str, skip: usize, n: usize) -> Vec<&Row> {
        let whole = self.head.len() == self.rows.len();
        let in_head = prefix.is_empty() && skip.saturating_add(n) <= self.head.len();
        let order: &[u32] = if whole || in_head {
            &self.head
        } else {
            self.by_pressure.get_or_init(|| {
                let mut v: Vec<u32> =
                    (0..u32::try_from(self.rows.len()).unwrap_or(u32::MAX)).collect();
                v.sort_unstable_by(|a, b| pressed(&self.rows, *a, *b));
                v
            })
        };
        let range = self.range(prefix);
        order
            .iter()
            .map(|&i| i as usize)
            .filter(|i| range.contains(i))
            .skip(skip)
            .take(n)
            .map(|i| &self.rows[i])
            .collect()
    }

    /// Per second over the window: (grants, denials) of the partitions in `t`.
    #[must_use]
    pub fn rates(&self, t: &Totals) -> (f64, f64) {
        let secs = self.window.as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        #[allow(clippy::cast_precision_loss)]
        (t.granted_delta as f64 / secs, t.denied_delta as f64 / secs)
    }
}

/// A resource at a glance.
#[derive(Debug, Clone)]
pub struct SummaryView {
    /// The resource-wide bucket: the whole resource when it is not per partition, its
    /// shared limits when it is (absent when a per-partition resource has none).
    pub shared: Option<QuotaView>,
    /// Sums over the live partitions under the prefix asked for.
    pub totals: Totals,
    /// Grants per second of those partitions over `window`.
    pub granted_per_second: f64,
    /// Denials per second of those partitions over `window`.
    pub denied_per_second: f64,
    /// The span the rates were measured over.
    pub window: Duration,
    /// The partitions under most pressure, most pressed first, each read now.
    pub top: Vec<(Arc<str>, QuotaView)>,
    /// When the partitions were read.
    pub at: SystemTime,
    /// The ranking's version (changes at most once per [`REFRESH`]).
    pub version: u64,
}

/// The order of a page of partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By name.
    Name,
    /// Most pressed first ([`Row::pressure`]).
    Pressure,
}

/// A page of partitions: each one's name and state read now, whether more follow, and how
/// many match in all.
pub type PartitionPage = (Vec<(Arc<str>, QuotaView)>, bool, u64);

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, share: f32, queue: u32, denied: u64, granted: u64) -> Row {
        Row {
            partition: name.into(),
            share,
            queue,
            in_flight: 0,
            cooling: false,
            cooldown_until: 0,
            probing: false,
            granted,
            denied,
            upstream_429: 0,
            granted_delta: 0,
            denied_delta: 0,
        }
    }

    #[test]
    fn deltas_follow_names_and_a_remade_bucket_counts_from_zero() {
        let t0 = SystemTime::UNIX_EPOCH;
        let a = Ranking::new(
            vec![row("b", 1.0, 0, 1, 10), row("a", 1.0, 0, 0, 5)],
            0,
            t0,
            None,
        );
        assert_eq!(a.version, 1);
        let b = Ranking::new(
            vec![
                row("c", 1.0, 0, 0, 3),
                row("b", 1.0, 0, 0, 4),
                row("a", 1.0, 0, 2, 9),
            ],
            2_000_000_000,
            t0,
            Some(&a),
        );
        let d: Vec<_> = b
            .rows
            .iter()
            .map(|r| (&*r.partition, r.granted_delta, r.denied_delta))
            .collect();
        // a grew by 4; b was remade (4 < 10): all 4 are new; c is new.
        assert_eq!(d, [("a", 4, 2), ("b", 4, 0), ("c", 3, 0)]);
        assert_eq!(b.window, Duration::from_secs(2));
        let t = b.totals("");
        assert_eq!(b.rates(&t), (5.5, 1.0));
        assert_eq!(b.version, 2);
    }

    #[test]
    fn prefix_ranges_and_pressure_order() {
        let r = Ranking::new(
            vec![
                row("user:1", 0.5, 0, 0, 0),
                row("user:10", 0.05, 0, 0, 0),
                row("user:2", 0.9, 3, 0, 0),
                row("team:1", 0.0, 0, 9, 0),
            ],
            0,
            SystemTime::UNIX_EPOCH,
            None,
        );
        assert_eq!(r.range("user:1"), 1..3);
        assert_eq!(r.range("x"), 4..4);
        assert_eq!(r.range(""), 0..4);
        let names = |v: Vec<&Row>| {
            v.iter()
                .map(|r| r.partition.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(r.top("", 0, 4)),
            ["user:2", "team:1", "user:10", "user:1"]
        );
        assert_eq!(names(r.top("user:", 1, 1)), ["user:10"]);
        let t = r.totals("user:");
        assert_eq!((t.partitions, t.queued, t.near_empty), (3, 3, 1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(48))]
        /// Name order, totals and every top/skip cut against a brute force, over more rows
        /// than the linear-time head holds (and names longer than the 16-byte sort key).
        #[test]
        fn ranking_matches_a_brute_force(
            raw in proptest::collection::vec(
                (0u16..400, 0u8..6, 0u8..3, 0u8..4),
                0..300,
            ),
            prefix in proptest::prop_oneof![
                proptest::strategy::Just(""),
                proptest::strategy::Just("k"),
                proptest::strategy::Just("k1"),
                proptest::strategy::Just("long-partition-name-"),
            ],
            skip in 0usize..120,
            n in 0usize..120,
        ) {
            // Distinct names: a partition appears once in a ranking.
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<Row> = raw
                .iter()
                .filter(|(id, ..)| seen.insert(*id))
                .map(|&(id, share, queue, denied)| {
                    let name = if id % 3 == 0 {
                        format!("long-partition-name-{id}")
                    } else {
                        format!("k{id}")
                    };
                    row(&name, f32::from(share) / 5.0, u32::from(queue), u64::from(denied), u64::from(id))
                })
                .collect();
            let r = Ranking::new(rows.clone(), 0, SystemTime::UNIX_EPOCH, None);
            let mut by_name = rows.clone();
            by_name.sort_by(|a, b| a.partition.cmp(&b.partition));
            // Without a previous ranking every count is new.
            for x in &mut by_name {
                x.granted_delta = x.granted;
                x.denied_delta = x.denied;
            }
            let names: Vec<&str> = r.rows.iter().map(|x| &*x.partition).collect();
            let want: Vec<&str> = by_name.iter().map(|x| &*x.partition).collect();
            proptest::prop_assert_eq!(&names, &want);
            let under: Vec<Row> = by_name
                .iter()
                .filter(|x| x.partition.starts_with(prefix))
                .cloned()
                .collect();
            let mut t = Totals::default();
            for x in &under {
                t.add(x);
            }
            proptest::prop_assert_eq!(r.totals(prefix), t);
            proptest::prop_assert_eq!(r.totals(prefix), t, "memoized");
            let mut pressed = under.clone();
            pressed.sort_by(Row::pressure);
            let want: Vec<&str> = pressed.iter().skip(skip).take(n).map(|x| &*x.partition).collect();
            let got: Vec<&str> = r.top(prefix, skip, n).iter().map(|x| &*x.partition).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
