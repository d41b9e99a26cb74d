//! Leaving the queue: a queued caller that times out or disconnects (tonic drops its
//! future) is taken out under the bucket lock, and a grant that raced in is given back, so a
//! cancelled caller takes nothing. A child of the registry: it uses its private locking and
//! queue draining.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Bucket, Registry, lock_pair};
use crate::permits::bucket::{QueueKey, Settle, WaitOutcome};

pub(super) enum TimedOut {
    Denied(Duration),
    Answered(WaitOutcome),
}

/// Takes a queued caller out of the queue when it stops waiting: on time-out, and on drop
/// (the client disconnected and tonic dropped the future). A grant that raced in is given
/// back, so a cancelled caller takes nothing.
pub(super) struct WaitGuard<'a> {
    pub(super) registry: &'a Registry,
    pub(super) home: &'a Arc<Bucket>,
    pub(super) sec: Option<&'a Arc<Bucket>>,
    pub(super) key: QueueKey,
    /// The caller's answer; `None` once taken (then dropping the guard does nothing).
    pub(super) rx: Option<oneshot::Receiver<WaitOutcome>>,
    /// The caller's place under the waiter caps, given back when it stops waiting.
    pub(super) _slot: crate::permits::caps::Held,
}

impl WaitGuard<'_> {
    pub(super) fn time_out(&mut self) -> TimedOut {
        let mut l = lock_pair(self.home, self.sec);
        let now = self.registry.inner.clock.now();
        if let Some(w) = l.home.dequeue(&self.key) {
            self.rx = None;
            // What blocks it now (a held slot, not only the rates), so that retry_after
            // agrees with an immediate denial's.
            let block = l.home.check(l.sec.as_deref(), &w.cost, now).err();
            let wait = l.home.estimate_wait(l.sec.as_deref(), &w.cost, block, now);
            // The head leaving may let the next waiter through.
            self.registry.drain_locked(&mut l, self.home, self.sec, now);
            return TimedOut::Denied(Duration::from_nanos(wait));
        }
        match self.rx.take().map(|mut rx| rx.try_recv()) {
            Some(Ok(o)) => TimedOut::Answered(o),
            _ => TimedOut::Answered(WaitOutcome::Replaced),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut l = lock_pair(self.home, self.sec);
        let now = self.registry.inner.clock.now();
        if l.home.dequeue(&self.key).is_none()
            && let Ok(WaitOutcome::Granted(g)) = rx.try_recv()
        {
            l.home
                .release(l.sec.as_deref_mut(), g.seq, g.tag, Settle::Refund, now);
        }
        self.registry.drain_locked(&mut l, self.home, self.sec, now);
    }
}
