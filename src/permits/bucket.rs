//! One bucket's state: its limits, the concurrency leases it holds and its wait queue.
//!
//! Pure and synchronous: every method takes `now`, nothing here sleeps, spawns or locks. The
//! registry holds each bucket in a `std::sync::Mutex` (held for nanoseconds, never across an
//! await) and does the async parts (waiting, timers) around these methods.
//!
//! A permit touches a *home* bucket (the one with the concurrency slots and the queue) and,
//! when the resource mixes scopes, a *secondary* bucket holding only limits. Checks and takes
//! cover both under both locks, so a grant is atomic across every limit it touches.
//!
//! Queue order: higher priority first, FIFO within a priority, strict head-of-line: a waiter
//! (or a new caller of equal or lower priority) never overtakes the head, so a large cost
//! cannot be starved by a stream of small ones.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};

use tokio::sync::oneshot;

use super::adaptive::{self, Adaptive};
use super::limit::{LimitState, Rate};
use super::resource::{Origin, ResourceDef, Scope};
use crate::clock::Nanos;

/// Units per dimension, indexed like [`ResourceDef::dimensions`].
pub type Cost = Box<[u64]>;

/// A limit in a bucket.
#[derive(Debug, Clone)]
pub struct LimitSlot {
    /// Index into the resource's dimensions (at most `MAX_DIMENSIONS`, so a byte: a slot
    /// is 48 bytes, not 56).
    dim: u8,
    /// Where it came from.
    pub origin: Origin,
    /// Why it has its rate.
    pub basis: Basis,
    /// The live state.
    pub state: LimitState,
}

/// Why a limit has the rate it has: the reason GetQuota and Watch show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The resource definition.
    Configured,
    /// Learned; the upstream stated the window (IETF `w`, a `;w=` in a limit header).
    StatedWindow,
    /// Learned; the window fitted from the reset: `limit - remaining` units come back in
    /// `reset` (a token bucket), or the longest reset seen (a fixed window).
    FittedWindow,
    /// Learned; the resets were too coarse (whole seconds) for the window, so a shorter one
    /// was tried and calls at its pace kept succeeding (or one is being tried).
    ProbedWindow,
    /// Learned; the window of the configured limit on the dimension (nothing better known).
    ConfiguredWindow,
    /// Learned; the dialect's usual window (nothing else known).
    DialectWindow,
    /// The adaptive rate (its own reason is in the bucket's adaptive state).
    Adaptive,
}

impl LimitSlot {
    /// A full limit of `rate` on `dimension`.
    #[must_use]
    pub fn new(dimension: usize, origin: Origin, rate: Rate) -> Self {
        let basis = match origin {
            Origin::Config => Basis::Configured,
            Origin::Learned => Basis::DialectWindow,
            Origin::Adaptive => Basis::Adaptive,
        };
        Self::with_basis(dimension, origin, basis, rate)
    }

    /// A full limit of `rate` on `dimension`, saying why it has that rate.
    #[must_use]
    pub fn with_basis(dimension: usize, origin: Origin, basis: Basis, rate: Rate) -> Self {
        Self {
            // Definitions are validated to at most MAX_DIMENSIONS (16) dimensions.
            dim: u8::try_from(dimension).unwrap_or(u8::MAX),
            origin,
            basis,
            state: LimitState::new(rate),
        }
    }

    /// Index into the resource's dimensions.
    #[must_use]
    pub fn dimension(&self) -> usize {
        usize::from(self.dim)
    }
}

/// A bucket's limits. Nearly every bucket has zero or one, so one is held inline: no
/// allocation, and no vector header.
#[derive(Debug, Clone, Default)]
pub struct Limits(LimitsRepr);

#[derive(Debug, Clone, Default)]
enum LimitsRepr {
    #[default]
    None,
    One(LimitSlot),
    Many(Vec<LimitSlot>),
}

impl Limits {
    /// Add a limit.
    pub fn push(&mut self, slot: LimitSlot) {
        self.0 = match std::mem::take(&mut self.0) {
            LimitsRepr::None => LimitsRepr::One(slot),
            LimitsRepr::One(first) => LimitsRepr::Many(vec![first, slot]),
            LimitsRepr::Many(mut v) => {
                v.push(slot);
                LimitsRepr::Many(v)
            }
        };
    }
}

impl Limits {
    /// Keep only the limits `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(&LimitSlot) -> bool) {
        let all: Vec<LimitSlot> = match std::mem::take(&mut self.0) {
            LimitsRepr::None => return,
            LimitsRepr::One(s) => vec![s],
            LimitsRepr::Many(v) => v,
        };
        *self = all.into_iter().filter(|s| keep(s)).collect();
    }
}

impl Deref for Limits {
    type Target = [LimitSlot];
    fn deref(&self) -> &[LimitSlot] {
        match &self.0 {
            LimitsRepr::None => &[],
            LimitsRepr::One(s) => std::slice::from_ref(s),
            LimitsRepr::Many(v) => v,
        }
    }
}

impl DerefMut for Limits {
    fn deref_mut(&mut self) -> &mut [LimitSlot] {
        match &mut self.0 {
            LimitsRepr::None => &mut [],
            LimitsRepr::One(s) => std::slice::from_mut(s),
            LimitsRepr::Many(v) => v,
        }
    }
}

impl FromIterator<LimitSlot> for Limits {
    fn from_iter<I: IntoIterator<Item = LimitSlot>>(iter: I) -> Self {
        let mut l = Self::default();
        for s in iter {
            l.push(s);
        }
        l
    }
}

/// Why a request cannot be granted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// A rate limit: room in `wait` nanoseconds.
    Rate {
        /// Nanoseconds until it fits.
        wait: Nanos,
    },
    /// All concurrency slots are held; the earliest lease ends in `wait` (if any).
    Concurrency {
        /// Nanoseconds until the earliest lease expires.
        wait: Option<Nanos>,
    },
    /// The bucket is paused after an upstream 429/503 for `wait` more nanoseconds.
    Cooldown {
        /// Nanoseconds until the cooldown ends.
        wait: Nanos,
    },
    /// The cost exceeds what a limit could ever grant.
    Never,
}

/// What a lease took: inline for a one-dimension resource (the common case), so holding a
/// lease allocates nothing.
#[derive(Debug, Clone)]
enum LeaseCost {
    One(u64),
    Many(Cost),
}

impl LeaseCost {
    fn new(cost: Cost) -> Self {
        match *cost {
            [c] => Self::One(c),
            _ => Self::Many(cost),
        }
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Self::One(c) => std::slice::from_ref(c),
            Self::Many(c) => c,
        }
    }
}

/// A concurrency slot held by a granted permit.
#[derive(Debug, Clone)]
struct Lease {
    /// Sequence number (the permit id's).
    seq: u64,
    /// Random part of the permit id (an id cannot be guessed from the sequence).
    tag: u64,
    /// When the slot is reclaimed.
    expires: Nanos,
    /// When it was granted: the earliest the upstream can have seen its call.
    granted: Nanos,
    /// What the permit took, for refunds and reconciliation.
    cost: LeaseCost,
}

/// Above this many leases a bucket indexes them (see [`ManyLeases`]); at or below, a vector
/// scanned linearly is both smaller and faster.
const FEW_LEASES: usize = 8;

/// The leases a bucket holds. Most buckets hold none or one (inline, no allocation); a few
/// (a short vector); busy concurrency limits hold many (indexed).
#[derive(Debug, Default)]
enum Leases {
    #[default]
    None,
    One(Lease),
    Few(Vec<Lease>),
    Many(Box<ManyLeases>),
}

/// Many leases, indexed. A bucket's permits are numbered as they are granted (the sequence
/// is taken under the bucket's lock) and nearly always hold the resource's one lease length,
/// so leases arrive in both sequence and expiry order: they go to the back of `fifo`, expire
/// from its front, and are found by binary search on the sequence. No hashing, no heap
/// sift, contiguous memory: at tens of thousands of leases per bucket the map-and-heap this
/// replaces was the grant path's largest own cost (bench/profile.md). A lease that would
/// break either order (a shorter per-call lease than the last one's) goes to `others`, a map
/// with an expiry heap.
#[derive(Debug, Default)]
struct ManyLeases {
    /// In sequence and expiry order; a released lease stays as a hole (`live` false) until
    /// it reaches the front or the holes outnumber the live leases.
    fifo: VecDeque<Slot>,
    /// Live leases in `fifo`.
    fifo_live: usize,
    others: HashMap<u64, Lease>,
    /// Expiry order of `others`. Released leases leave entries behind; the top is always
    /// live (stale tops are popped at once), so it is the exact next expiry.
    expiries: BinaryHeap<Reverse<(Nanos, u64)>>,
}

#[derive(Debug)]
struct Slot {
    lease: Lease,
    live: bool,
}

impl ManyLeases {
    fn len(&self) -> usize {
        self.fifo_live + self.others.len()
    }

    fn insert(&mut self, lease: Lease) {
        let in_order = self
            .fifo
            .back()
            .is_none_or(|b| b.lease.seq < lease.seq && b.lease.expires <= lease.expires);
        if in_order {
            self.fifo.push_back(Slot { lease, live: true });
            self.fifo_live += 1;
        } else {
            self.expiries.push(Reverse((lease.expires, lease.seq)));
            self.others.insert(lease.seq, lease);
        }
    }

    fn remove(&mut self, seq: u64, tag: u64) -> Option<Lease> {
        if let Ok(i) = self.fifo.binary_search_by_key(&seq, |s| s.lease.seq) {
            let slot = self
                .fifo
                .get_mut(i)
                .filter(|s| s.live && s.lease.tag == tag)?;
            slot.live = false;
            let lease = slot.lease.clone();
            self.fifo_live -= 1;
            self.tidy();
            return Some(lease);
        }
        if self.others.get(&seq).is_some_and(|l| l.tag == tag) {
            let l = self.others.remove(&seq);
            self.pop_stale();
            return l;
        }
        None
    }

    /// Drop holes at the front, and every hole once they outnumber the live leases (so a
    /// bucket whose permits are released holds O(live) memory, at O(1) amortised cost).
    fn tidy(&mut self) {
        while self.fifo.front().is_some_and(|s| !s.live) {
            self.fifo.pop_front();
        }
        if self.fifo.len() > 2 * self.fifo_live + FEW_LEASES {
            self.fifo.retain(|s| s.live);
        }
    }

    fn is_live(&self, at: Nanos, seq: u64) -> bool {
        self.others.get(&seq).is_some_and(|l| l.expires == at)
    }

    fn pop_stale(&mut self) {
        while let Some(&Reverse((at, seq))) = self.expiries.peek() {
            if self.is_live(at, seq) {
                break;
            }
            self.expiries.pop();
        }
    }

    fn reclaim(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        while let Some(front) = self.fifo.front() {
            if front.live {
                if front.lease.expires > now {
                    break;
                }
                self.fifo_live -= 1;
                n += 1;
            }
            self.fifo.pop_front();
        }
        while let Some(&Reverse((at, seq))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            if self.is_live(at, seq) {
                self.others.remove(&seq);
                n += 1;
            }
        }
        self.pop_stale();
        n
    }

    fn next_expiry(&self) -> Option<Nanos> {
        // The front of `fifo` is live: holes there are dropped as they appear.
        let a = self.fifo.front().map(|s| s.lease.expires);
        let b = self.expiries.peek().map(|Reverse((at, _))| *at);
        a.into_iter().chain(b).min()
    }

    fn expiries(&self) -> impl Iterator<Item = Nanos> + '_ {
        self.fifo
            .iter()
            .filter(|s| s.live)
            .map(|s| s.lease.expires)
            .chain(self.others.values().map(|l| l.expires))
    }

    fn into_leases(self) -> impl Iterator<Item = Lease> {
        self.fifo
            .into_iter()
            .filter(|s| s.live)
            .map(|s| s.lease)
            .chain(self.others.into_values())
    }
}

impl Leases {
    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(_) => 1,
            Self::Few(v) => v.len(),
            Self::Many(m) => m.len(),
        }
    }

    fn insert(&mut self, lease: Lease) {
        *self = match std::mem::take(self) {
            Self::None => Self::One(lease),
            Self::One(first) => Self::Few(vec![first, lease]),
            Self::Few(mut v) if v.len() < FEW_LEASES => {
                v.push(lease);
                Self::Few(v)
            }
            Self::Few(v) => {
                let mut m = ManyLeases::default();
                v.into_iter().for_each(|l| m.insert(l));
                m.insert(lease);
                Self::Many(Box::new(m))
            }
            Self::Many(mut m) => {
                m.insert(lease);
                Self::Many(m)
            }
        };
    }

    /// Remove the lease `seq` if its tag is `tag`.
    fn remove(&mut self, seq: u64, tag: u64) -> Option<Lease> {
        let found = match self {
            Self::None => None,
            Self::One(l) if l.seq == seq && l.tag == tag => match std::mem::take(self) {
                Self::One(l) => Some(l),
                _ => None,
            },
            Self::One(_) => None,
            Self::Few(v) => v
                .iter()
                .position(|l| l.seq == seq && l.tag == tag)
                .map(|i| v.swap_remove(i)),
            Self::Many(m) => m.remove(seq, tag),
        };
        self.compact();
        found
    }

    /// Drop leases that ended at or before `now`; returns how many.
    fn reclaim(&mut self, now: Nanos) -> usize {
        let n = match self {
            Self::None => 0,
            Self::One(l) => {
                if l.expires > now {
                    return 0;
                }
                *self = Self::None;
                1
            }
            Self::Few(v) => {
                let before = v.len();
                v.retain(|l| l.expires > now);
                before - v.len()
            }
            Self::Many(m) => m.reclaim(now),
        };
        if n > 0 {
            self.compact();
        }
        n
    }

    /// The `k`-th earliest expiry (1 = the next); `None` when fewer leases are held.
    fn kth_expiry(&self, k: usize) -> Option<Nanos> {
        if k == 1 {
            return self.next_expiry();
        }
        let mut all: Vec<Nanos> = match self {
            Self::None => return None,
            Self::One(l) => vec![l.expires],
            Self::Few(v) => v.iter().map(|l| l.expires).collect(),
            Self::Many(m) => m.expiries().collect(),
        };
        let i = k.checked_sub(1).filter(|&i| i < all.len())?;
        Some(*all.select_nth_unstable(i).1)
    }

    fn next_expiry(&self) -> Option<Nanos> {
        match self {
            Self::None => None,
            Self::One(l) => Some(l.expires),
            Self::Few(v) => v.iter().map(|l| l.expires).min(),
            Self::Many(m) => m.next_expiry(),
        }
    }

    /// Move to the smallest representation that fits: the indexed one is kept until it
    /// holds half of [`FEW_LEASES`], so a bucket hovering at the threshold does not convert
    /// back and forth.
    fn compact(&mut self) {
        let shrink = match self {
            Self::Few(v) => v.len() <= 1,
            Self::Many(m) => m.len() <= FEW_LEASES / 2,
            Self::None | Self::One(_) => false,
        };
        if !shrink {
            return;
        }
        let mut v: Vec<Lease> = match std::mem::take(self) {
            Self::Few(v) => v,
            Self::Many(m) => m.into_leases().collect(),
            other => {
                *self = other;
                return;
            }
        };
        *self = match v.len() {
            0 => Self::None,
            1 => v.pop().map_or(Self::None, Self::One),
            _ => Self::Few(v),
        };
    }
}

/// A granted permit.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Sequence number (the key of its lease).
    pub seq: u64,
    /// Random tag.
    pub tag: u64,
    /// When the lease ends.
    pub expires: Nanos,
    /// When it was granted.
    pub at: Nanos,
}

/// What a queued caller is eventually told.
#[derive(Debug)]
pub enum WaitOutcome {
    /// Granted while waiting.
    Granted(Granted),
    /// The resource was replaced: try again against the new definition.
    Replaced,
    /// The resource was deleted.
    Deleted,
    /// The server is shutting down.
    Shutdown,
    /// The limits changed so that the cost can never be granted.
    Impossible,
}

/// A queued caller.
#[derive(Debug)]
pub struct Waiter {
    /// What it asks for.
    pub cost: Cost,
    /// Lease it wants, in nanoseconds.
    pub lease_ns: Nanos,
    /// Where its answer goes.
    pub tx: oneshot::Sender<WaitOutcome>,
}

/// Queue position: priority (higher first), then arrival.
pub type QueueKey = (Reverse<i32>, u64);

/// What few buckets need at any moment: a wait queue, a wake-up timer, a cooldown, blocked
/// dimensions, upstream 429s. Kept out of line and allocated on first use, so an ordinary
/// bucket pays one pointer for all of it; dropped again once back to the defaults.
#[derive(Debug, Default)]
struct Rare {
    queue: BTreeMap<QueueKey, Waiter>,
    /// Per dimension, the cost of everyone queued (empty until the first waiter).
    queued_cost: Vec<u64>,
    /// Per dimension: the upstream said 0 remaining until this instant (empty until the
    /// first block).
    blocked_until: Vec<Nanos>,
    /// Per dimension, why it is blocked (which header said so), for GetQuota and Watch.
    blocked_why: Vec<String>,
    timer_at: Option<Nanos>,
    cooldown_until: Nanos,
    /// Why the cooldown in force was imposed.
    cooldown_why: String,
    upstream_429_total: u64,
    /// Slow start and the adaptive rate, while the upstream's limits are unconfirmed.
    adaptive: Option<Adaptive>,
    /// Per dimension, what the upstream showed of how an exhausted quota comes back, the
    /// stated reset a pending probe is held to, the refusals so far, and the probe's permit
    /// (0: not granted yet). Empty until the first probe.
    refill: Vec<(Refilled, Nanos, u8, u64)>,
    /// Per dimension, what the answers so far prove about a fitted window.
    fits: Vec<Option<Fit>>,
}

/// What the answers so far prove about the window of a learned limit of `amount`: at
/// least `lo`, at most `hi` (0: no upper bound yet). When the resets are too coarse to say
/// (whole seconds against a sub-second refill), a shorter `trial` window is tried: it
/// becomes `hi` once calls at its pace kept succeeding, and `lo` when one was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fit {
    /// The limit the bounds are for (a changed limit starts over).
    pub amount: u64,
    /// The window is at least this long.
    pub lo: Nanos,
    /// The window is at most this long (0: unknown).
    pub hi: Nanos,
    /// The tightest upper bound the headers alone proved (0: none), `hi` before trials.
    pub proven: Nanos,
    /// The longest window a 429 answered at (0: none): the window is longer than that.
    pub too_short: Nanos,
    /// A shorter window being tried (0: none).
    pub trial: Nanos,
    /// When the trial began.
    pub since: Nanos,
    /// Calls that succeeded at the trial's pace.
    pub held: u64,
    /// The `hi` before a trial's window replaced it (0: `hi` is the headers' own): a 429 at
    /// the adopted pace goes back to it.
    pub prev: Nanos,
    /// Successful calls seen, and trials (or adopted paces) refused: a trial may start only
    /// while refusals stay under 1 + 1 % of successes.
    pub wins: u32,
    /// See `wins`.
    pub misses: u32,
    /// Answers that showed the limit spent since the last trial.
    pub bound: u32,
    /// Whether `hi` came from a trial.
    pub probed: bool,
    /// Whether the bounds read the resets as a fixed window's end (they do not carry over
    /// once a probe showed a token bucket).
    pub at_reset: bool,
}

impl Fit {
    /// The window to enforce: a trial's while one runs; else the longest the evidence
    /// allows when it bounds it from above (the bound tightens towards the truth as answers
    /// come), else the shortest it proves.
    #[must_use]
    pub fn window(&self) -> Nanos {
        if self.trial > 0 {
            self.trial
        } else if self.hi > 0 {
            self.hi
        } else {
            self.lo
        }
    }
}

/// What an upstream whose headers name a reset instant (a fixed window, by the dialect)
/// showed when a probe was let through before that reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refilled {
    /// Not tested yet.
    #[default]
    Unknown,
    /// A call succeeded before the stated reset: units come back sooner (a token bucket
    /// speaking a fixed window's dialect), so the reset is read as "back to full".
    Early,
    /// Probes were refused twice (one refusal may be a probe a little early): a real fixed
    /// window; blocks last until the reset.
    AtReset,
}

/// Refused probes that make a fixed window.
const REFUSED_PROBES: u8 = 2;

impl Rare {
    /// Whether it holds nothing that matters at `now` (an ended cooldown or block is the
    /// same as none: every reader compares it with the clock).
    fn is_default(&self, now: Nanos) -> bool {
        self.queue.is_empty()
            && self.timer_at.is_none()
            && self.cooldown_until <= now
            && self.blocked_until.iter().all(|&b| b <= now)
            && self.upstream_429_total == 0
            && self.adaptive.is_none()
            && self.refill.is_empty()
            && self.fits.is_empty()
    }
}

/// The state of one bucket. Small on purpose (a partition bucket exists per live user):
/// one limit and one lease inline, everything rare behind one pointer.
#[derive(Debug)]
pub struct BucketState {
    /// Limits living in this bucket.
    pub limits: Limits,
    leases: Leases,
    rare: Option<Box<Rare>>,
    /// Permits granted.
    pub granted_total: u64,
    /// Permits denied.
    pub denied_total: u64,
    /// Concurrency limit (home buckets only; 0 = unlimited).
    pub concurrency: u32,
    /// Set when the bucket was dropped from its map: holders must look it up again.
    pub retired: bool,
    /// The resource's dimension count (at most `MAX_DIMENSIONS`).
    dims: u8,
}

impl BucketState {
    /// A fresh, full bucket with the limits of `scope` from `def`; `home` buckets also get
    /// the concurrency limit.
    #[must_use]
    pub fn new(def: &ResourceDef, scope: Scope, home: bool) -> Self {
        let mut limits: Limits = def
            .limits
            .iter()
            .filter(|l| l.scope == scope)
            .map(|l| LimitSlot::new(l.dimension, l.origin, l.rate))
            .collect();
        // Slow start: only a home bucket holds permits in flight.
        let rare = (home && def.probe_concurrency > 0).then(|| {
            let a = Adaptive::probing(def.probe_concurrency, def.adapts());
            // The ramp paces the probes too, so a bucket without headers to learn from
            // does not spend its first three calls at once.
            if let Some(rate) = a.rate() {
                limits.push(LimitSlot::new(0, Origin::Adaptive, rate));
            }
            Box::new(Rare {
                adaptive: Some(a),
                ..Rare::default()
            })
        });
        Self {
            limits,
            leases: Leases::None,
            rare,
            granted_total: 0,
            denied_total: 0,
            concurrency: if home { def.concurrency } else { 0 },
            retired: false,
            dims: u8::try_from(def.dimensions.len()).unwrap_or(u8::MAX),
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Free the rare part once it is back to the defaults.
    fn tidy(&mut self, now: Nanos) {
        if self.rare.as_ref().is_some_and(|r| r.is_default(now)) {
            self.rare = None;
        }
    }

    /// Permits holding a lease.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        u32::try_from(self.leases.len()).unwrap_or(u32::MAX)
    }

    /// When a wake-up timer is armed for the queue head.
    #[must_use]
    pub fn timer_at(&self) -> Option<Nanos> {
        self.rare.as_ref().and_then(|r| r.timer_at)
    }

    /// Record the armed wake-up timer (`None`: none is armed).
    pub fn set_timer_at(&mut self, at: Option<Nanos>) {
        match (at, self.rare.as_mut()) {
            (None, None) => {}
            (None, Some(r)) => r.timer_at = None,
            (Some(_), _) => self.rare_mut().timer_at = at,
        }
    }

    /// Paused until this instant (an upstream 429/503): nothing is granted before it. An
    /// ended cooldown may read as 0.
    #[must_use]
    pub fn cooldown_until(&self) -> Nanos {
        self.rare.as_ref().map_or(0, |r| r.cooldown_until)
    }

    /// Why the cooldown in force was imposed ("" when none was explained).
    #[must_use]
    pub fn cooldown_why(&self) -> &str {
        self.rare.as_ref().map_or("", |r| r.cooldown_why.as_str())
    }

    /// Until when `dimension` is blocked and why, if a block was ever set on it.
    #[must_use]
    pub fn block_of(&self, dimension: usize) -> Option<(Nanos, &str)> {
        let r = self.rare.as_ref()?;
        let until = *r.blocked_until.get(dimension)?;
        let why = r.blocked_why.get(dimension).map_or("", String::as_str);
        Some((until, why))
    }

    /// Say why a pause is in force: the cooldown (`dimension` `None`) or a dimension's block.
    pub fn explain(&mut self, dimension: Option<usize>, why: String) {
        let dims = usize::from(self.dims);
        let r = self.rare_mut();
        match dimension {
            None => r.cooldown_why = why,
            Some(d) if d < dims => {
                if r.blocked_why.len() < dims {
                    r.blocked_why.resize(dims, String::new());
                }
                r.blocked_why[d] = why;
            }
            Some(_) => {}
        }
    }

    /// Clear every pause and what the upstream taught: cooldown, blocks, learned limits and
    /// fits (an admin's ResetResource). The counters and the leases stay.
    pub fn clear_pauses(&mut self) {
        if let Some(r) = self.rare.as_mut() {
            r.cooldown_until = 0;
            r.cooldown_why.clear();
            r.blocked_until.clear();
            r.blocked_why.clear();
        }
    }

    /// Upstream 429 answers reported.
    #[must_use]
    pub fn upstream_429_total(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.upstream_429_total)
    }

    /// Count an upstream 429.
    pub fn count_429(&mut self) {
        let r = self.rare_mut();
        r.upstream_429_total = r.upstream_429_total.saturating_add(1);
    }

    /// Nanoseconds until `cost` fits every limit here (`None`: never, a cost above a burst).
    fn rate_wait(&self, cost: &[u64], now: Nanos) -> Option<Nanos> {
        let mut wait = 0;
        let blocked = self.rare.as_ref().map_or(&[][..], |r| &r.blocked_until);
        for (d, &until) in blocked.iter().enumerate() {
            if until > now && cost.get(d).is_some_and(|&c| c > 0) {
                wait = wait.max(until - now);
            }
        }
        for l in self.limits.iter() {
            let c = cost.get(l.dimension()).copied().unwrap_or(0);
            wait = wait.max(l.state.wait_for(c, now)?);
        }
        Some(wait)
    }

    /// Nanoseconds until `cost` units have accumulated, even above a burst (queue-wide
    /// estimates).
    fn accumulate_wait(&self, cost: &[u64], now: Nanos) -> Nanos {
        self.limits
            .iter()
            .map(|l| {
                l.state
                    .ready_in(cost.get(l.dimension()).copied().unwrap_or(0), now)
            })
            .max()
            .unwrap_or(0)
    }

    /// Return slots whose lease ended.
    pub fn reclaim(&mut self, now: Nanos) -> usize {
        self.tidy(now);
        self.leases.reclaim(now)
    }

    /// Whether `cost` could be granted now (after reclaiming expired leases).
    pub fn check(
        &mut self,
        secondary: Option<&BucketState>,
        cost: &[u64],
        now: Nanos,
    ) -> Result<(), Block> {
        self.reclaim(now);
        // A cost no limit could ever grant is told so at once, even during a cooldown.
        let rate = match (
            self.rate_wait(cost, now),
            secondary.map_or(Some(0), |s| s.rate_wait(cost, now)),
        ) {
            (Some(a), Some(b)) => a.max(b),
            _ => return Err(Block::Never),
        };
        let cooldown_until = self.cooldown_until();
        if cooldown_until > now {
            return Err(Block::Cooldown {
                wait: cooldown_until - now,
            });
        }
        if self.slots().is_some_and(|n| self.in_flight() >= n) {
            let wait = self
                .leases
                .next_expiry()
                .map(|e| e.saturating_sub(now).max(rate));
            return Err(Block::Concurrency { wait });
        }
        if rate > 0 {
            return Err(Block::Rate { wait: rate });
        }
        Ok(())
    }

    /// Take `cost` and hold a lease (the caller checked first).
    pub fn commit(
        &mut self,
        secondary: Option<&mut BucketState>,
        cost: Cost,
        now: Nanos,
        lease_ns: Nanos,
        seq: u64,
        tag: u64,
    ) -> Granted {
        take(&mut self.limits, &cost, now);
        if let Some(s) = secondary {
            take(&mut s.limits, &cost, now);
            s.granted_total = s.granted_total.saturating_add(1);
        }
        let expires = now.saturating_add(lease_ns);
        self.leases.insert(Lease {
            seq,
            tag,
            expires,
            granted: now,
            cost: LeaseCost::new(cost),
        });
        self.granted_total = self.granted_total.saturating_add(1);
        if let Some(r) = self.rare.as_mut() {
            if let Some(a) = r.adaptive.as_mut() {
                a.granted(seq);
            }
            // The first grant after a refill probe was armed is the probe.
            for e in &mut r.refill {
                if e.0 == Refilled::Unknown && e.1 != 0 && e.3 == 0 {
                    e.3 = seq;
                }
            }
        }
        Granted {
            seq,
            tag,
            expires,
            at: now,
        }
    }

    /// Whether a caller of `priority` may be granted ahead of the queue (no waiter of equal
    /// or higher priority is ahead of it).
    #[must_use]
    pub fn may_bypass_queue(&self, priority: i32) -> bool {
        self.rare.as_ref().is_none_or(|r| {
            r.queue
                .first_key_value()
                .is_none_or(|((Reverse(p), _), _)| *p < priority)
        })
    }

    /// Waiters queued.
    #[must_use]
    pub fn queue_len(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| r.queue.len())
    }

    /// Queue a caller.
    pub fn enqueue(&mut self, key: QueueKey, waiter: Waiter) {
        let r = self.rare_mut();
        if r.queued_cost.is_empty() {
            r.queued_cost = vec![0; waiter.cost.len()];
        }
        add(&mut r.queued_cost, &waiter.cost);
        r.queue.insert(key, waiter);
    }

    /// Remove a waiter (timed out or gone); `None` when it was already answered.
    pub fn dequeue(&mut self, key: &QueueKey) -> Option<Waiter> {
        let r = self.rare.as_mut()?;
        let w = r.queue.remove(key)?;
        sub(&mut r.queued_cost, &w.cost);
        Some(w)
    }

    /// Whether `key` is at the head of the queue.
    #[must_use]
    pub fn is_head(&self, key: &QueueKey) -> bool {
        self.rare
            .as_ref()
            .and_then(|r| r.queue.first_key_value())
            .is_some_and(|(k, _)| k == key)
    }

    /// Nanoseconds until `cost` could be granted behind everyone queued now, with nothing
    /// else changing: the latest of every limit's refill (for the cost plus the queue ahead),
    /// every dimension block and the cooldown, and the lease expiry that frees a slot (never
    /// zero: a denial always says when to come back). Exact when nobody is queued; with a
    /// queue, the rates are exact and the slots the queue will hold are not counted.
    #[must_use]
    pub fn estimate_wait(
        &self,
        secondary: Option<&BucketState>,
        cost: &[u64],
        block: Option<Block>,
        now: Nanos,
    ) -> Nanos {
        let mut total = cost.to_vec();
        if let Some(r) = &self.rare {
            add(&mut total, &r.queued_cost);
        }
        let mut wait = self
            .accumulate_wait(&total, now)
            .max(self.held_back(&total, now))
            .max(secondary.map_or(0, |s| {
                s.accumulate_wait(&total, now).max(s.held_back(&total, now))
            }));
        if let Some(slots) = self.slots() {
            // The slot this caller would take is freed by the k-th earliest expiry, where k
            // counts the callers (held leases, then queued) that are ahead of it.
            let ahead = self.leases.len() + self.queue_len();
            let limit = usize::try_from(slots).unwrap_or(usize::MAX);
            if ahead >= limit {
                let k = ahead + 1 - limit;
                wait = wait.max(
                    self.leases
                        .kth_expiry(k)
                        .map_or(0, |e| e.saturating_sub(now)),
                );
            }
        }
        if let Some(Block::Concurrency { wait: Some(w) } | Block::Cooldown { wait: w }) = block {
            wait = wait.max(w);
        }
        wait.max(1_000_000)
    }

    /// Permits allowed in flight now: the concurrency limit, or slow start's probe if
    /// tighter (`None`: unlimited).
    fn slots(&self) -> Option<u32> {
        let probe = self.adaptive().map(|a| a.probe).filter(|&p| p > 0);
        match (self.concurrency, probe) {
            (0, p) => p,
            (c, None) => Some(c),
            (c, Some(p)) => Some(c.min(p)),
        }
    }

    /// Slow start and the adaptive rate, while the upstream's limits are unconfirmed.
    #[must_use]
    pub fn adaptive(&self) -> Option<&Adaptive> {
        self.rare.as_ref().and_then(|r| r.adaptive.as_ref())
    }

    /// Whether slow start still limits permits in flight.
    #[must_use]
    pub fn is_probing(&self) -> bool {
        self.adaptive().is_some_and(Adaptive::is_probing)
    }

    /// Nanoseconds until the cooldown and every block on a dimension `cost` uses have ended.
    fn held_back(&self, cost: &[u64], now: Nanos) -> Nanos {
        let Some(r) = &self.rare else {
            return 0;
        };
        let mut wait = r.cooldown_until.saturating_sub(now);
        for (d, &until) in r.blocked_until.iter().enumerate() {
            if cost.get(d).is_some_and(|&c| c > 0) {
                wait = wait.max(until.saturating_sub(now));
            }
        }
        wait
    }

    /// Grant queued callers from the head while they fit. Returns the instant a timer must
    /// wake the queue (the head's rate wait or the next lease expiry), if any.
    pub fn drain(
        &mut self,
        secondary: Option<&mut BucketState>,
        now: Nanos,
        next_id: impl FnMut() -> (u64, u64),
    ) -> Option<Nanos> {
        let wake = self.drain_queue(secondary, now, next_id);
        self.tidy(now);
        wake
    }

    fn drain_queue(
        &mut self,
        mut secondary: Option<&mut BucketState>,
        now: Nanos,
        mut next_id: impl FnMut() -> (u64, u64),
    ) -> Option<Nanos> {
        loop {
            let (key, cost) = {
                let (k, w) = self.rare.as_ref()?.queue.first_key_value()?;
                (*k, w.cost.clone())
            };
            match self.check(secondary.as_deref(), &cost, now) {
                Ok(()) => {
                    let w = self.dequeue(&key)?;
                    let (seq, tag) = next_id();
                    let g =
                        self.commit(secondary.as_deref_mut(), w.cost, now, w.lease_ns, seq, tag);
                    if w.tx.send(WaitOutcome::Granted(g)).is_err() {
                        // The caller vanished between the check and the send: undo.
                        self.release(secondary.as_deref_mut(), seq, tag, Settle::Refund, now);
                    }
                }
                Err(Block::Rate { wait } | Block::Cooldown { wait }) => {
                    return Some(now.saturating_add(wait));
                }
                Err(Block::Concurrency { wait }) => return wait.map(|w| now.saturating_add(w)),
                Err(Block::Never) => {
                    // Limits were lowered under it: it can never be granted, and it must not
                    // block the queue behind it.
                    if let Some(w) = self.dequeue(&key) {
                        let _ = w.tx.send(WaitOutcome::Impossible);
                    }
                }
            }
        }
    }

    /// Release a permit's lease: when it was granted, `None` when the permit is unknown or
    /// already released.
    pub fn release(
        &mut self,
        secondary: Option<&mut BucketState>,
        seq: u64,
        tag: u64,
        settle: Settle<'_>,
        now: Nanos,
    ) -> Option<Nanos> {
        let lease = self.leases.remove(seq, tag)?;
        let cost = lease.cost.as_slice();
        // (refund, charge) of one dimension.
        let amounts = |d: usize| -> (u64, u64) {
            let Some(&c) = cost.get(d) else {
                return (0, 0);
            };
            match settle {
                Settle::Keep => (0, 0),
                Settle::Refund => (c, 0),
                Settle::Actual(actual) => match actual.get(d) {
                    Some(Some(a)) => (c.saturating_sub(*a), a.saturating_sub(c)),
                    _ => (0, 0),
                },
            }
        };
        settle_limits(&mut self.limits, amounts, now);
        if let Some(s) = secondary {
            settle_limits(&mut s.limits, amounts, now);
        }
        Some(lease.granted)
    }

    /// Give back `cost` taken without a permit ([`Self::charge`] undone).
    pub fn refund(&mut self, cost: &[u64], now: Nanos) {
        settle_limits(
            &mut self.limits,
            |d| (cost.get(d).copied().unwrap_or(0), 0),
            now,
        );
    }

    /// Charge a cost incurred without a permit (a report of an un-permitted call).
    pub fn charge(&mut self, cost: &[u64], now: Nanos) {
        for l in self.limits.iter_mut() {
            let c = cost.get(l.dimension()).copied().unwrap_or(0);
            if c > 0 {
                l.state.charge(c, now);
            }
        }
    }

    /// Whether the bucket holds nothing a fresh one would not: no lease, no waiter, every
    /// limit full.
    #[must_use]
    pub fn is_idle(&self, now: Nanos) -> bool {
        self.leases.len() == 0
            && self.rare.as_ref().is_none_or(|r| {
                r.queue.is_empty()
                    && r.cooldown_until <= now
                    && r.blocked_until.iter().all(|&b| b <= now)
            })
            && self.limits.iter().all(|l| l.state.is_full(now))
    }

    /// Answer every waiter with `outcome` (resource replaced, deleted, shutdown).
    pub fn close_queue(&mut self, outcome: impl Fn() -> WaitOutcome) {
        let Some(r) = self.rare.as_mut() else {
            return;
        };
        for (_, w) in std::mem::take(&mut r.queue) {
            let _ = w.tx.send(outcome());
        }
        r.queued_cost = Vec::new();
        // No clock here: 0 frees it only when no cooldown or block was ever set.
        self.tidy(0);
    }
}

impl BucketState {
    /// Pause the bucket until `until` (never shortens a cooldown already in force).
    pub fn cool_down(&mut self, until: Nanos) {
        let r = self.rare_mut();
        r.cooldown_until = r.cooldown_until.max(until);
    }

    /// Grant nothing of `dimension` until `until` (the upstream said 0 remaining).
    pub fn block_dimension(&mut self, dimension: usize, until: Nanos) {
        if dimension >= usize::from(self.dims) {
            return;
        }
        let dims = usize::from(self.dims);
        let r = self.rare_mut();
        if r.blocked_until.is_empty() {
            r.blocked_until = vec![0; dims];
        }
        if let Some(b) = r.blocked_until.get_mut(dimension) {
            *b = (*b).max(until);
        }
    }

    /// Lower the limits of `dimension` to `remaining` if they think they have more: those
    /// of the same window when the upstream gave one, else all of the dimension.
    /// `earliest`: the first instant the upstream can have counted (the reported call's
    /// grant; `now` when unknown). Returns whether any limit had to change.
    pub fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        earliest: Nanos,
        now: Nanos,
    ) -> bool {
        let mut changed = false;
        for l in self.limits.iter_mut().filter(|l| {
            l.dimension() == dimension && window_ns.is_none_or(|w| l.state.rate().period_ns == w)
        }) {
            changed |= l.state.correct_since(remaining, earliest, now);
        }
        changed
    }

    /// Set the learned limit of `dimension` for `rate`'s window. An upstream may publish
    /// several windows for one dimension (100/min and 1 000/day), each stated: one limit per
    /// stated window. A window permitd inferred (fitted, configured, the dialect's) is one
    /// limit per dimension, re-rated as the evidence moves, keeping its level. A changed
    /// stated amount starts a fresh bucket (the correction that follows sets its level).
    /// Returns true when the bucket changed.
    pub fn learn(&mut self, dimension: usize, rate: Rate, basis: Basis, now: Nanos) -> bool {
        let stated = basis == Basis::StatedWindow;
        if let Some(slot) = self.limits.iter_mut().find(|l| {
            l.dimension() == dimension
                && l.origin == Origin::Learned
                && if stated {
                    l.basis == Basis::StatedWindow && l.state.rate().period_ns == rate.period_ns
                } else {
                    l.basis != Basis::StatedWindow
                }
        }) {
            let old = slot.state.rate();
            if old == rate || (!stated && old.amount == rate.amount && close(old, rate)) {
                return false;
            }
            slot.basis = basis;
            if stated {
                slot.state = LimitState::new(rate);
            } else {
                slot.state.rerate(rate, now);
            }
            return true;
        }
        let learned = self
            .limits
            .iter()
            .filter(|l| l.dimension() == dimension && l.origin == Origin::Learned)
            .count();
        if learned >= MAX_LEARNED_PER_DIMENSION {
            return false;
        }
        self.limits.push(LimitSlot::with_basis(
            dimension,
            Origin::Learned,
            basis,
            rate,
        ));
        true
    }

    /// Drop the configured limits of `dimension`: they were a guess, and the upstream has
    /// now said what its limit is.
    pub fn drop_guess(&mut self, dimension: usize) -> bool {
        let before = self.limits.len();
        self.limits
            .retain(|l| !(l.dimension() == dimension && l.origin == Origin::Config));
        before != self.limits.len()
    }

    /// The upstream confirmed its limits (a response taught one): slow start and the
    /// adaptive rate end.
    pub fn confirm(&mut self) {
        if let Some(r) = self.rare.as_mut()
            && r.adaptive.take().is_some()
        {
            self.limits.retain(|l| l.origin != Origin::Adaptive);
        }
    }

    /// A call succeeded without its headers teaching a limit: slow start counts it, the
    /// adaptive rate grows. `cap`: the configured rate of `requests`, units per second.
    pub fn succeeded_blind(&mut self, cap: Option<f64>, now: Nanos) {
        let Some(a) = self.rare.as_mut().and_then(|r| r.adaptive.as_mut()) else {
            return;
        };
        if a.succeeded(cap.map(adaptive::milli_of), now) {
            self.set_adaptive_limit(now);
        }
    }

    /// What the answers so far prove about `dim`'s fitted window.
    #[must_use]
    pub fn fit(&self, dim: usize) -> Option<Fit> {
        self.rare
            .as_ref()
            .and_then(|r| r.fits.get(dim).copied().flatten())
    }

    /// Keep what the answers prove about `dim`'s fitted window.
    pub fn set_fit(&mut self, dim: usize, fit: Fit) {
        let dims = usize::from(self.dims);
        if dim >= dims {
            return;
        }
        let r = self.rare_mut();
        if r.fits.is_empty() {
            r.fits = vec![None; dims];
        }
        if let Some(f) = r.fits.get_mut(dim) {
            *f = Some(fit);
        }
    }

    /// What dimension `dim`'s upstream showed of its refill.
    #[must_use]
    pub fn refilled(&self, dim: usize) -> Refilled {
        self.rare
            .as_ref()
            .and_then(|r| r.refill.get(dim))
            .map_or(Refilled::Unknown, |e| e.0)
    }

    /// Let one probe through at `probe_at`, before the stated reset `reset_at` of an
    /// exhausted `dim`, so its answer shows how the quota comes back.
    pub fn arm_refill_probe(&mut self, dim: usize, probe_at: Nanos, reset_at: Nanos) {
        let dims = usize::from(self.dims);
        if dim >= dims {
            return;
        }
        for l in self
            .limits
            .iter_mut()
            .filter(|l| l.dimension() == dim && l.origin == Origin::Learned)
        {
            l.state.allow_one_at(probe_at);
        }
        let r = self.rare_mut();
        if r.refill.is_empty() {
            r.refill = vec![(Refilled::Unknown, 0, 0, 0); dims];
        }
        if let Some(e) = r.refill.get_mut(dim) {
            e.1 = reset_at;
            e.3 = 0;
        }
        match r.adaptive.as_mut() {
            Some(a) => a.probe = a.probe.max(1),
            None => r.adaptive = Some(Adaptive::probing(1, false)),
        }
    }

    /// Judge a pending probe of `dim` by its answer (permit `seq`; `None`: a call made
    /// without one): a success before the stated reset means units come back early; a
    /// refusal, a real fixed window. Answers to calls granted before the probe say nothing
    /// about it (a burst's 429s would read as a window).
    pub fn observe_refill(&mut self, dim: usize, status: u32, seq: Option<u64>, now: Nanos) {
        let Some(e) = self.rare.as_mut().and_then(|r| r.refill.get_mut(dim)) else {
            return;
        };
        if e.0 != Refilled::Unknown || e.1 == 0 {
            return;
        }
        if seq.is_some_and(|s| s != e.3) {
            return;
        }
        if (200..300).contains(&status) && now < e.1 {
            *e = (Refilled::Early, 0, e.2, 0);
        } else if status == 429 {
            let refused = e.2.saturating_add(1);
            let verdict = if refused >= REFUSED_PROBES {
                Refilled::AtReset
            } else {
                Refilled::Unknown
            };
            *e = (verdict, 0, refused, 0);
        }
    }

    /// Empty every limit (they refill at their rate from `now`): after a restart nothing
    /// says what the upstream granted just before it.
    pub fn empty_limits(&mut self, now: Nanos) {
        for l in self.limits.iter_mut() {
            l.state.correct_down(0, now);
        }
    }

    /// A permit was released as used without a reported outcome: slow start counts it;
    /// once it ends this way no adaptive rate is kept (nothing reports how calls go).
    pub fn completed_unreported(&mut self) {
        let Some(a) = self.rare.as_mut().and_then(|r| r.adaptive.as_mut()) else {
            return;
        };
        // Slow start over by calls nobody reported: nothing will ever move the ramp, so it
        // must not hold the resource; a rate cut after a real 429 stays.
        if a.completed() && a.step == adaptive::Step::Ramp {
            self.confirm();
        }
    }

    /// A 429 without rate-limit headers answered permit `seq` (`None`: a call made without
    /// one): cut the adaptive rate (creating it if the resource had none), unless the permit
    /// was in flight at the last cut. Calls resume at `resume_at`. True when cut.
    pub fn limited_blind(
        &mut self,
        seq: Option<u64>,
        cap: Option<f64>,
        now: Nanos,
        resume_at: Nanos,
    ) -> bool {
        let a = self
            .rare_mut()
            .adaptive
            .get_or_insert_with(|| Adaptive::probing(0, false));
        if !a.limited(seq, cap.map(adaptive::milli_of), now, resume_at) {
            return false;
        }
        self.set_adaptive_limit(now);
        true
    }

    /// Make the adaptive limit on `requests` follow the adaptive rate (keeping its level).
    fn set_adaptive_limit(&mut self, now: Nanos) {
        let Some(rate) = self.adaptive().and_then(Adaptive::rate) else {
            return;
        };
        match self
            .limits
            .iter_mut()
            .find(|l| l.origin == Origin::Adaptive)
        {
            Some(slot) => slot.state.rerate(rate, now),
            None => self.limits.push(LimitSlot::new(0, Origin::Adaptive, rate)),
        }
    }
}

/// What a bucket learned about its upstream, kept across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedState {
    /// Learned limits: (dimension, rate, how its window was read).
    pub limits: Vec<(usize, Rate, Basis)>,
    /// The adaptive rate, if any.
    pub adaptive: Option<(u64, u64, adaptive::Step, u64)>,
    /// The cooldown in force (monotonic; 0 = none).
    pub cooldown_until: Nanos,
}

impl LearnedState {
    /// Whether there is nothing worth keeping.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.adaptive.is_none() && self.cooldown_until == 0
    }
}

impl BucketState {
    /// What this bucket learned (a cooldown that ended at `now` is not kept).
    #[must_use]
    pub fn learned_state(&self, now: Nanos) -> LearnedState {
        LearnedState {
            limits: self
                .limits
                .iter()
                .filter(|l| l.origin == Origin::Learned)
                .map(|l| (l.dimension(), l.state.rate(), l.basis))
                .collect(),
            adaptive: self.adaptive().filter(|a| a.milli > 0).map(Adaptive::parts),
            cooldown_until: Some(self.cooldown_until())
                .filter(|&c| c > now)
                .unwrap_or(0),
        }
    }

    /// Put back what a bucket learned before a restart. Limits start full; the guesses of
    /// learned dimensions give way as when they were learned (`limits_known` false). A
    /// bucket that starts slow keeps doing so, now at the restored rate, so the first
    /// answer sets the level again.
    pub fn restore(&mut self, s: &LearnedState, def: &ResourceDef, now: Nanos) {
        for &(dim, rate, basis) in &s.limits {
            if dim >= usize::from(self.dims) {
                continue;
            }
            if !def.limits_known {
                self.drop_guess(dim);
            }
            self.learn(dim, rate, basis, now);
        }
        if let Some(parts) = s.adaptive
            && def.adapts()
        {
            self.rare_mut().adaptive = Some(Adaptive::restored(parts, def.probe_concurrency));
            self.set_adaptive_limit(now);
        } else if !s.limits.is_empty() {
            // The upstream sends headers: the probe alone re-reads the level, no ramp.
            if let Some(a) = self.rare.as_mut().and_then(|r| r.adaptive.as_mut()) {
                a.milli = 0;
            }
            self.limits.retain(|l| l.origin != Origin::Adaptive);
        }
        if s.cooldown_until > now {
            self.cool_down(s.cooldown_until);
        }
    }
}

/// Whether two inferred windows are within 1 % of each other: not worth a re-rate.
fn close(a: Rate, b: Rate) -> bool {
    a.burst == b.burst && a.period_ns.abs_diff(b.period_ns) <= a.period_ns / 100
}

/// Windows learned per dimension at most (headers are untrusted input: bounded state).
pub const MAX_LEARNED_PER_DIMENSION: usize = 4;

/// How a released permit's cost is settled.
#[derive(Debug, Clone, Copy)]
pub enum Settle<'a> {
    /// The call was made as acquired.
    Keep,
    /// The call was never made: give everything back.
    Refund,
    /// The call used these amounts (per dimension; `None` = as acquired).
    Actual(&'a [Option<u64>]),
}

fn take(limits: &mut [LimitSlot], cost: &[u64], now: Nanos) {
    for l in limits {
        let c = cost.get(l.dimension()).copied().unwrap_or(0);
        if c > 0 {
            l.state.charge(c, now);
        }
    }
}

fn settle_limits(limits: &mut [LimitSlot], amounts: impl Fn(usize) -> (u64, u64), now: Nanos) {
    for l in limits {
        let (r, c) = amounts(l.dimension());
        if r > 0 {
            l.state.refund(r);
        }
        if c > 0 {
            l.state.charge(c, now);
        }
    }
}

fn add(acc: &mut [u64], cost: &[u64]) {
    for (a, c) in acc.iter_mut().zip(cost) {
        *a = a.saturating_add(*c);
    }
}

fn sub(acc: &mut [u64], cost: &[u64]) {
    for (a, c) in acc.iter_mut().zip(cost) {
        *a = a.saturating_sub(*c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(usize, bool),
        Reclaim(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // One lease length (the usual case: leases in expiry order) and any length.
            2 => Just(500u64).prop_map(Op::Insert),
            2 => (1u64..1000).prop_map(Op::Insert),
            2 => (0usize..64, any::<bool>()).prop_map(|(i, ok)| Op::Remove(i, ok)),
            1 => (0u64..300).prop_map(Op::Reclaim),
        ]
    }

    proptest! {
        /// The compact lease set (inline, vector, indexed) behaves like a plain list of
        /// leases through every representation change: same removals, reclaims, next expiry.
        #[test]
        fn leases_match_a_plain_list(ops in proptest::collection::vec(op(), 1..400)) {
            let mut leases = Leases::default();
            let mut model: Vec<(u64, u64, Nanos)> = Vec::new();
            let (mut now, mut seq) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Insert(d) => {
                        seq += 1;
                        let tag = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        leases.insert(Lease {
                            seq,
                            tag,
                            expires: now + d,
                            granted: now,
                            cost: LeaseCost::new(vec![seq].into_boxed_slice()),
                        });
                        model.push((seq, tag, now + d));
                    }
                    Op::Remove(i, ok) => {
                        let Some(&(s, t, _)) = model.get(i % model.len().max(1)) else {
                            prop_assert!(leases.remove(1, 1).is_none());
                            continue;
                        };
                        let tag = if ok { t } else { t ^ 1 };
                        let got = leases.remove(s, tag);
                        prop_assert_eq!(got.is_some(), ok);
                        if let Some(l) = got {
                            prop_assert_eq!(l.cost.as_slice(), &[s][..]);
                            model.retain(|m| m.0 != s);
                        }
                    }
                    Op::Reclaim(d) => {
                        now += d;
                        let before = model.len();
                        model.retain(|m| m.2 > now);
                        prop_assert_eq!(leases.reclaim(now), before - model.len());
                    }
                }
                prop_assert_eq!(leases.len(), model.len());
                prop_assert_eq!(leases.next_expiry(), model.iter().map(|m| m.2).min());
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Ask for `cost` and take it when it fits (holding a lease of `lease` ms).
        Take(u64, u64, u64),
        /// An upstream pause of this many ms.
        Cool(u64),
        /// A dimension exhausted for this many ms.
        Block(usize, u64),
        /// Release the oldest lease (refunding or not).
        Release(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u64..4, 0u64..30, 1u64..3000).prop_map(|(r, t, l)| Step::Take(r, t, l)),
            1 => (1u64..3000).prop_map(Step::Cool),
            1 => (0usize..2, 1u64..3000).prop_map(|(d, ms)| Step::Block(d, ms)),
            1 => any::<bool>().prop_map(Step::Release),
        ]
    }

    type Shape = (Vec<(usize, u64, u64, u64)>, u32);

    fn shape() -> impl Strategy<Value = Shape> {
        (
            proptest::collection::vec((0usize..2, 1u64..20, 1u64..3000, 1u64..25), 0..3),
            0u32..4,
        )
    }

    fn model_def((limits, concurrency): &Shape) -> ResourceDef {
        use crate::permits::resource::{BackoffDef, LimitDef};
        ResourceDef {
            name: "r".into(),
            dimensions: vec!["requests".into(), "tokens".into()],
            declared_dimensions: vec!["tokens".into()],
            limits: limits
                .iter()
                .map(|&(dimension, amount, period_ms, burst)| LimitDef {
                    dimension,
                    rate: Rate {
                        amount,
                        period_ns: period_ms * 1_000_000,
                        burst,
                    },
                    scope: Scope::Resource,
                    scope_explicit: false,
                    origin: Origin::Config,
                })
                .collect(),
            concurrency: *concurrency,
            lease: std::time::Duration::from_secs(60),
            per_partition: false,
            backoff: BackoffDef::default(),
            max_queue: 10,
            learn_from_headers: false,
            failure_policy: None,
            limits_known: true,
            probe_concurrency: 0,
            accept_feedback_without_permit: false,
        }
    }

    /// The bucket after `steps`, one millisecond apart, and the instant after the last.
    fn replay(def: &ResourceDef, steps: &[Step]) -> (BucketState, Nanos) {
        const MS: u64 = 1_000_000;
        let mut b = BucketState::new(def, Scope::Resource, true);
        let mut now: Nanos = 1_000 * MS;
        let mut seq = 0u64;
        let mut held: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        for s in steps {
            now += MS;
            match *s {
                Step::Take(r, t, lease) => {
                    if b.check(None, &[r, t], now).is_ok() {
                        seq += 1;
                        b.commit(None, vec![r, t].into_boxed_slice(), now, lease * MS, seq, 7);
                        held.push_back(seq);
                    }
                }
                Step::Cool(ms) => b.cool_down(now + ms * MS),
                Step::Block(d, ms) => b.block_dimension(d, now + ms * MS),
                Step::Release(refund) => {
                    if let Some(s) = held.pop_front() {
                        let settle = if refund { Settle::Refund } else { Settle::Keep };
                        b.release(None, s, 7, settle, now);
                    }
                }
            }
        }
        (b, now + MS)
    }

    proptest! {
        /// A denial's wait is exact: with nothing else changing, the same request asked again
        /// after exactly that wait is granted, and a millisecond earlier it is not, whatever
        /// holds it back (limits on either dimension, blocks, a cooldown, held slots).
        #[test]
        fn denial_wait_is_exact(
            shape in shape(),
            steps in proptest::collection::vec(step(), 0..60),
            ask in (0u64..4, 0u64..30),
        ) {
            let def = model_def(&shape);
            let cost = [ask.0, ask.1];
            let (mut b, now) = replay(&def, &steps);
            let block = match b.check(None, &cost, now) {
                Ok(()) | Err(Block::Never) => return Ok(()),
                Err(e) => e,
            };
            let wait = b.estimate_wait(None, &cost, Some(block), now);
            let (mut at, _) = replay(&def, &steps);
            prop_assert_eq!(at.check(None, &cost, now + wait), Ok(()), "wait {}", wait);
            let (mut early, _) = replay(&def, &steps);
            let before = (now + wait).saturating_sub(1_000_000).max(now);
            prop_assert!(early.check(None, &cost, before).is_err(), "wait {}", wait);
        }
    }

    /// Sizes that the memory target depends on (see `memory_per_bucket`).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn compact_sizes() {
        assert_eq!(std::mem::size_of::<LimitSlot>(), 48);
        assert_eq!(std::mem::size_of::<Limits>(), 48);
        assert_eq!(std::mem::size_of::<Lease>(), 48);
        assert_eq!(std::mem::size_of::<BucketState>(), 136);
    }
}
