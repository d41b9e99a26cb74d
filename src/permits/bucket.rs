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
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use tokio::sync::oneshot;

use super::limit::{LimitState, Rate};
use super::resource::{Origin, ResourceDef, Scope};
use crate::clock::Nanos;

/// Units per dimension, indexed like [`ResourceDef::dimensions`].
pub type Cost = Box<[u64]>;

/// A limit in a bucket.
#[derive(Debug, Clone)]
pub struct LimitSlot {
    /// Index into the resource's dimensions.
    pub dimension: usize,
    /// Where it came from.
    pub origin: Origin,
    /// The live state.
    pub state: LimitState,
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

/// A concurrency slot held by a granted permit.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Random part of the permit id (an id cannot be guessed from the sequence).
    pub tag: u64,
    /// What the permit took, for refunds and reconciliation.
    pub cost: Cost,
    /// When the slot is reclaimed.
    pub expires: Nanos,
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

/// The state of one bucket.
#[derive(Debug)]
pub struct BucketState {
    /// Limits living in this bucket.
    pub limits: Vec<LimitSlot>,
    /// Concurrency limit (home buckets only; 0 = unlimited).
    pub concurrency: u32,
    /// Permits holding a lease.
    pub in_flight: u32,
    leases: HashMap<u64, Lease>,
    expiries: BinaryHeap<Reverse<(Nanos, u64)>>,
    queue: BTreeMap<QueueKey, Waiter>,
    queued_cost: Vec<u64>,
    /// When a wake-up timer is armed for the queue head.
    pub timer_at: Option<Nanos>,
    /// Permits granted.
    pub granted_total: u64,
    /// Permits denied.
    pub denied_total: u64,
    /// Set when the bucket was dropped from its map: holders must look it up again.
    pub retired: bool,
    /// Paused until this instant (an upstream 429/503): nothing is granted before it.
    pub cooldown_until: Nanos,
    /// Per dimension: the upstream said 0 remaining until this instant.
    pub blocked_until: Vec<Nanos>,
    /// Upstream 429 answers reported.
    pub upstream_429_total: u64,
}

impl BucketState {
    /// A fresh, full bucket with the limits of `scope` from `def`; `home` buckets also get
    /// the concurrency limit.
    #[must_use]
    pub fn new(def: &ResourceDef, scope: Scope, home: bool) -> Self {
        let limits = def
            .limits
            .iter()
            .filter(|l| l.scope == scope)
            .map(|l| LimitSlot {
                dimension: l.dimension,
                origin: l.origin,
                state: LimitState::new(l.rate),
            })
            .collect();
        Self {
            limits,
            concurrency: if home { def.concurrency } else { 0 },
            in_flight: 0,
            leases: HashMap::new(),
            expiries: BinaryHeap::new(),
            queue: BTreeMap::new(),
            queued_cost: vec![0; def.dimensions.len()],
            timer_at: None,
            granted_total: 0,
            denied_total: 0,
            retired: false,
            cooldown_until: 0,
            blocked_until: vec![0; def.dimensions.len()],
            upstream_429_total: 0,
        }
    }

    /// Nanoseconds until `cost` fits every limit here (`None`: never, a cost above a burst).
    fn rate_wait(&self, cost: &[u64], now: Nanos) -> Option<Nanos> {
        let mut wait = 0;
        for (d, &until) in self.blocked_until.iter().enumerate() {
            if until > now && cost.get(d).is_some_and(|&c| c > 0) {
                wait = wait.max(until - now);
            }
        }
        for l in &self.limits {
            let c = cost.get(l.dimension).copied().unwrap_or(0);
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
                    .ready_in(cost.get(l.dimension).copied().unwrap_or(0), now)
            })
            .max()
            .unwrap_or(0)
    }

    /// Return slots whose lease ended.
    pub fn reclaim(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        while let Some(&Reverse((at, seq))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            // The heap may hold entries of leases already released: only live ones count.
            if self.leases.get(&seq).is_some_and(|l| l.expires == at) {
                self.leases.remove(&seq);
                self.in_flight = self.in_flight.saturating_sub(1);
                n += 1;
            }
        }
        n
    }

    fn next_expiry(&self) -> Option<Nanos> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Whether `cost` could be granted now (after reclaiming expired leases).
    pub fn check(
        &mut self,
        secondary: Option<&BucketState>,
        cost: &[u64],
        now: Nanos,
    ) -> Result<(), Block> {
        self.reclaim(now);
        if self.cooldown_until > now {
            return Err(Block::Cooldown {
                wait: self.cooldown_until - now,
            });
        }
        let rate = match (
            self.rate_wait(cost, now),
            secondary.map_or(Some(0), |s| s.rate_wait(cost, now)),
        ) {
            (Some(a), Some(b)) => a.max(b),
            _ => return Err(Block::Never),
        };
        if self.concurrency > 0 && self.in_flight >= self.concurrency {
            let wait = self.next_expiry().map(|e| e.saturating_sub(now).max(rate));
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
        self.in_flight = self.in_flight.saturating_add(1);
        self.leases.insert(seq, Lease { tag, cost, expires });
        self.expiries.push(Reverse((expires, seq)));
        self.granted_total = self.granted_total.saturating_add(1);
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
        self.queue
            .first_key_value()
            .is_none_or(|((Reverse(p), _), _)| *p < priority)
    }

    /// Waiters queued.
    #[must_use]
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Queue a caller.
    pub fn enqueue(&mut self, key: QueueKey, waiter: Waiter) {
        add(&mut self.queued_cost, &waiter.cost);
        self.queue.insert(key, waiter);
    }

    /// Remove a waiter (timed out or gone); `None` when it was already answered.
    pub fn dequeue(&mut self, key: &QueueKey) -> Option<Waiter> {
        let w = self.queue.remove(key)?;
        sub(&mut self.queued_cost, &w.cost);
        Some(w)
    }

    /// Whether `key` is at the head of the queue.
    #[must_use]
    pub fn is_head(&self, key: &QueueKey) -> bool {
        self.queue.first_key_value().is_some_and(|(k, _)| k == key)
    }

    /// Estimated nanoseconds until `cost` could be granted behind everyone queued now
    /// (never zero: a denial always says when to come back).
    #[must_use]
    pub fn estimate_wait(
        &self,
        secondary: Option<&BucketState>,
        cost: &[u64],
        block: Option<Block>,
        now: Nanos,
    ) -> Nanos {
        let mut total = self.queued_cost.clone();
        add(&mut total, cost);
        let mut wait = self
            .accumulate_wait(&total, now)
            .max(secondary.map_or(0, |s| s.accumulate_wait(&total, now)));
        match block {
            Some(Block::Concurrency { wait: w }) => wait = wait.max(w.unwrap_or(0)),
            Some(Block::Cooldown { wait: w }) => wait = wait.max(w),
            _ => {}
        }
        wait.max(1_000_000)
    }

    /// Grant queued callers from the head while they fit. Returns the instant a timer must
    /// wake the queue (the head's rate wait or the next lease expiry), if any.
    pub fn drain(
        &mut self,
        mut secondary: Option<&mut BucketState>,
        now: Nanos,
        mut next_id: impl FnMut() -> (u64, u64),
    ) -> Option<Nanos> {
        loop {
            let (key, cost) = {
                let (k, w) = self.queue.first_key_value()?;
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

    /// Release a permit's lease; `None` when the permit is unknown or already released.
    pub fn release(
        &mut self,
        secondary: Option<&mut BucketState>,
        seq: u64,
        tag: u64,
        settle: Settle<'_>,
        now: Nanos,
    ) -> Option<Lease> {
        if self.leases.get(&seq).is_none_or(|l| l.tag != tag) {
            return None;
        }
        let lease = self.leases.remove(&seq)?;
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut refund = vec![0; lease.cost.len()];
        let mut charge = vec![0; lease.cost.len()];
        match settle {
            Settle::Keep => {}
            Settle::Refund => refund.copy_from_slice(&lease.cost),
            Settle::Actual(actual) => {
                for (i, a) in actual.iter().enumerate() {
                    if let (Some(a), Some(&c)) = (a, lease.cost.get(i)) {
                        refund[i] = c.saturating_sub(*a);
                        charge[i] = a.saturating_sub(c);
                    }
                }
            }
        }
        settle_limits(&mut self.limits, &refund, &charge, now);
        if let Some(s) = secondary {
            settle_limits(&mut s.limits, &refund, &charge, now);
        }
        Some(lease)
    }

    /// Charge a cost incurred without a permit (a report of an un-permitted call).
    pub fn charge(&mut self, cost: &[u64], now: Nanos) {
        for l in &mut self.limits {
            let c = cost.get(l.dimension).copied().unwrap_or(0);
            if c > 0 {
                l.state.charge(c, now);
            }
        }
    }

    /// Whether the bucket holds nothing a fresh one would not: no lease, no waiter, every
    /// limit full.
    #[must_use]
    pub fn is_idle(&self, now: Nanos) -> bool {
        self.leases.is_empty()
            && self.queue.is_empty()
            && self.cooldown_until <= now
            && self.blocked_until.iter().all(|&b| b <= now)
            && self.limits.iter().all(|l| l.state.is_full(now))
    }

    /// Answer every waiter with `outcome` (resource replaced, deleted, shutdown).
    pub fn close_queue(&mut self, outcome: impl Fn() -> WaitOutcome) {
        for (_, w) in std::mem::take(&mut self.queue) {
            let _ = w.tx.send(outcome());
        }
        self.queued_cost.iter_mut().for_each(|c| *c = 0);
    }
}

impl BucketState {
    /// Pause the bucket until `until` (never shortens a cooldown already in force).
    pub fn cool_down(&mut self, until: Nanos) {
        self.cooldown_until = self.cooldown_until.max(until);
    }

    /// Grant nothing of `dimension` until `until` (the upstream said 0 remaining).
    pub fn block_dimension(&mut self, dimension: usize, until: Nanos) {
        if let Some(b) = self.blocked_until.get_mut(dimension) {
            *b = (*b).max(until);
        }
    }

    /// Lower the limits of `dimension` to `remaining` if they think they have more: those
    /// of the same window when the upstream gave one, else all of the dimension.
    pub fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        now: Nanos,
    ) {
        for l in self.limits.iter_mut().filter(|l| {
            l.dimension == dimension && window_ns.is_none_or(|w| l.state.rate().period_ns == w)
        }) {
            l.state.correct_down(remaining, now);
        }
    }

    /// Set the learned limit of `dimension` for `rate`'s window (an upstream may publish
    /// several windows for one dimension: 100/min and 1 000/day). A changed amount starts a
    /// fresh bucket. Configured limits stay: every limit must have room, so a learned limit
    /// can only make the resource stricter, never raise a configured one.
    pub fn learn(&mut self, dimension: usize, rate: Rate) -> bool {
        if let Some(slot) = self.limits.iter_mut().find(|l| {
            l.dimension == dimension
                && l.origin == Origin::Learned
                && l.state.rate().period_ns == rate.period_ns
        }) {
            if slot.state.rate() == rate {
                return false;
            }
            slot.state = LimitState::new(rate);
            return true;
        }
        let learned = self
            .limits
            .iter()
            .filter(|l| l.dimension == dimension && l.origin == Origin::Learned)
            .count();
        if learned >= MAX_LEARNED_PER_DIMENSION {
            return false;
        }
        self.limits.push(LimitSlot {
            dimension,
            origin: Origin::Learned,
            state: LimitState::new(rate),
        });
        true
    }
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
        let c = cost.get(l.dimension).copied().unwrap_or(0);
        if c > 0 {
            l.state.charge(c, now);
        }
    }
}

fn settle_limits(limits: &mut [LimitSlot], refund: &[u64], charge: &[u64], now: Nanos) {
    for l in limits {
        let r = refund.get(l.dimension).copied().unwrap_or(0);
        let c = charge.get(l.dimension).copied().unwrap_or(0);
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
