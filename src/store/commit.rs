//! [`GroupCommit`]: one flush makes every write that arrived meanwhile durable.
//!
//! A flush (fsync) costs milliseconds; flushing once per write caps durable writes at a few
//! hundred per second and queues writers behind each other's fsyncs. Instead, a writer
//! finishes its write, then calls [`GroupCommit::durable`]: it joins the batch of waiters
//! that the flusher thread will take next, and is answered when that batch's flush ends.
//! The flusher takes the whole batch, flushes once, answers everyone in it, and loops;
//! writers that arrive during a flush form the next batch. A write is in a batch only
//! after it completed, and the batch is taken before its flush starts, so the flush always
//! covers it.
//!
//! The flusher is a dedicated OS thread, not a tokio task: `flush` blocks on disk (sled's
//! blocking `flush`; `flush_async` can deadlock across runtimes, spacejam/sled#1357), and a
//! thread of its own keeps that off the async workers without holding a blocking-pool
//! thread per waiter. Waiters wait on a tokio oneshot, so they hold no thread at all.
//! [`GroupCommit::close`] stops the thread (after flushing any last batch) and joins it, so
//! the store it owns is released before the caller reopens the directory.
//!
//! [`GroupCommit::per_write`] is the same interface without grouping (one flush per waiter,
//! each in `spawn_blocking`): it exists to measure what grouping buys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{RecordStore, StoreError};

/// The outcome of one flush, shared by every waiter of its batch.
type FlushResult = Result<(), Arc<StoreError>>;

/// Batches durability waits onto shared flushes. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    /// State shared with the flusher thread.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("flushes", &self.flushes())
            .field("waits", &self.waits())
            .finish_non_exhaustive()
    }
}

/// What the handles and the flusher share.
struct Inner {
    /// Waiters of the next batch, and whether the flusher must stop.
    state: Mutex<State>,
    /// Wakes the flusher when the first waiter of a batch arrives, or on close.
    wake: Condvar,
    /// Flushes done so far.
    flushes: AtomicU64,
    /// Durability waits served so far.
    waits: AtomicU64,
    /// Grouped: the flusher thread (taken by `close`). Per write: the store itself.
    mode: Mode,
    /// The first flush failure (or flusher panic), with its cause: once set, the store can
    /// no longer promise durability, and the server stops serving for its supervisor.
    fault: tokio::sync::watch::Sender<Option<Arc<str>>>,
}

/// How waits are served.
enum Mode {
    /// One flusher thread, joined by `close`.
    Grouped(Mutex<Option<JoinHandle<()>>>),
    /// Each wait flushes on its own (for measurement).
    PerWrite(Arc<dyn RecordStore>),
}

/// The next batch.
#[derive(Default)]
struct State {
    /// Who waits for the next flush.
    waiters: Vec<oneshot::Sender<FlushResult>>,
    /// Set by `close`: the flusher ends after serving what is queued.
    closed: bool,
    /// Set when the flusher died: later waits fail at once instead of waiting forever.
    dead: bool,
}

impl GroupCommit {
    /// Starts the flusher thread over `store`; the thread owns the store until
    /// [`close`](Self::close).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the OS refuses a new thread.
    pub fn start(store: Arc<dyn RecordStore>) -> Result<GroupCommit, StoreError> {
        let inner = Arc::new(Inner::new(Mode::Grouped(Mutex::new(None))));
        // Any I/O error of the store is a fault too, not only a failed flush (weak: the
        // store must not keep the committer alive).
        let reporter = Arc::downgrade(&inner);
        store.on_fault(Arc::new(move |e| {
            if let Some(inner) = reporter.upgrade() {
                inner.failed(super::corrupt::error_chain(e));
            }
        }));
        let shared = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("permitd-flusher".into())
            .spawn(move || flusher(&shared, store.as_ref()))
            .map_err(|e| StoreError::Backend {
                op: "start flusher",
                transient: true,
                source: e.into(),
            })?;
        if let Mode::Grouped(slot) = &inner.mode {
            *lock(slot) = Some(thread);
        }
        Ok(GroupCommit { inner })
    }

    /// No grouping: every [`durable`](Self::durable) call flushes on its own in
    /// `spawn_blocking`. For measuring what grouping buys; the server never uses it.
    #[must_use]
    pub fn per_write(store: Arc<dyn RecordStore>) -> GroupCommit {
        GroupCommit {
            inner: Arc::new(Inner::new(Mode::PerWrite(store))),
        }
    }

    /// Returns once every write that completed before this call is durable.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the flush failed (the write may not survive a crash),
    /// or, transient, when the committer was closed before flushing.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.inner.waits.fetch_add(1, Ordering::Relaxed);
        let result = match &self.inner.mode {
            Mode::PerWrite(store) => {
                let store = Arc::clone(store);
                let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
                self.inner.flushes.fetch_add(1, Ordering::Relaxed);
                return flushed.map_err(|e| StoreError::Backend {
                    op: "flush",
                    transient: true,
                    source: e.into(),
                })?;
            }
            Mode::Grouped(_) => {
                let (tx, rx) = oneshot::channel();
                {
                    let mut state = lock(&self.inner.state);
                    if state.dead {
                        return Err(dead());
                    }
                    if state.closed {
                        return Err(closed());
                    }
                    state.waiters.push(tx);
                    if state.waiters.len() == 1 {
                        self.inner.wake.notify_one();
                    }
                }
                rx.await.map_err(|_| closed())?
            }
        };
        result.map_err(|shared| StoreError::Backend {
            op: "flush",
            transient: shared.is_transient(),
            source: Box::new(Shared(shared)),
        })
    }

    /// The first flush failure, once there is one (`None` while every flush succeeded).
    #[must_use]
    pub fn fault(&self) -> tokio::sync::watch::Receiver<Option<Arc<str>>> {
        self.inner.fault.subscribe()
    }

    /// Flushes done so far (fewer than [`waits`](Self::waits) when grouping works).
    #[must_use]
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// Durability waits served so far.
    #[must_use]
    pub fn waits(&self) -> u64 {
        self.inner.waits.load(Ordering::Relaxed)
    }

    /// Flushes what is queued, stops the flusher and joins it (blocking for at most one
    /// flush). Later waits fail as transient. Idempotent.
    pub fn close(&self) {
        lock(&self.inner.state).closed = true;
        self.inner.wake.notify_one();
        if let Mode::Grouped(slot) = &self.inner.mode {
            let thread = lock(slot).take();
            if let Some(thread) = thread
                && thread.join().is_err()
            {
                tracing::error!("the flusher thread panicked");
            }
        }
    }
}

impl Inner {
    /// Shared state for `mode`.
    fn new(mode: Mode) -> Inner {
        Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            mode,
            fault: tokio::sync::watch::channel(None).0,
        }
    }

    /// Record the first fault (logged once, with its cause).
    fn failed(&self, cause: String) {
        self.fault.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            tracing::error!(
                cause = %cause,
                "store fault: writes can no longer be made durable; stopping for the supervisor"
            );
            *f = Some(cause.into());
            true
        });
    }
}

/// The flusher thread: take a batch, flush once, answer it; until closed and drained.
fn flusher(inner: &Inner, store: &dyn RecordStore) {
    loop {
        let batch = {
            let mut state = lock(&inner.state);
            while state.waiters.is_empty() && !state.closed {
                state = inner
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.waiters.is_empty() {
                return;
            }
            std::mem::take(&mut state.waiters)
        };
        // A panic inside the store must not leave this batch, or any later waiter,
        // waiting for a thread that is gone.
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.flush()));
        inner.flushes.fetch_add(1, Ordering::Relaxed);
        let (result, panicked) = match flushed {
            Ok(r) => (r.map_err(Arc::new), false),
            Err(_) => (Err(Arc::new(dead())), true),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "flush failed");
            inner.failed(super::corrupt::error_chain(&**e));
        }
        for waiter in batch {
            // A waiter that went away (its call was cancelled) needs no answer.
            let _ = waiter.send(result.clone());
        }
        if panicked {
            let mut state = lock(&inner.state);
            state.dead = true;
            for waiter in std::mem::take(&mut state.waiters) {
                let _ = waiter.send(Err(Arc::new(dead())));
            }
            return;
        }
    }
}

/// The error of a wait on a flusher that died.
fn dead() -> StoreError {
    StoreError::Backend {
        op: "flush",
        transient: false,
        source: "the flusher thread panicked".into(),
    }
}

/// A lock whose data stays consistent even if a holder panicked (each critical section
/// is a single push, take or flag set).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error of a wait that the closed committer will never serve.
fn closed() -> StoreError {
    StoreError::Backend {
        op: "flush",
        transient: true,
        source: "the store is closing".into(),
    }
}

/// A flush error shared by every waiter of a batch, as each waiter's source.
#[derive(Debug)]
struct Shared(Arc<StoreError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::RecordTree;
    use crate::store::{MemoryStore, Scanned, Write};
    use std::sync::atomic::AtomicBool;

    /// A store whose flush blocks until released and can be made to fail or panic.
    #[derive(Default)]
    struct Gate {
        entered: AtomicU64,
        flushes: AtomicU64,
        fail: AtomicBool,
        panic: AtomicBool,
        open: Mutex<bool>,
        cv: Condvar,
    }

    impl Gate {
        fn release(&self) {
            *lock(&self.open) = true;
            self.cv.notify_all();
        }
    }

    impl RecordStore for Gate {
        fn get(&self, _: RecordTree, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn update(
            &self,
            _: RecordTree,
            _: &[u8],
            _: &mut dyn FnMut(Option<&[u8]>) -> Write,
        ) -> Result<bool, StoreError> {
            Ok(false)
        }
        fn scan(
            &self,
            _: RecordTree,
            _: Option<&[u8]>,
            _: usize,
        ) -> Result<Vec<Scanned>, StoreError> {
            Ok(vec![])
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut open = lock(&self.open);
            while !*open {
                open = self.cv.wait(open).unwrap_or_else(PoisonError::into_inner);
            }
            self.flushes.fetch_add(1, Ordering::SeqCst);
            assert!(
                !self.panic.load(Ordering::SeqCst),
                "injected: the disk layer blew up"
            );
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    op: "flush",
                    transient: true,
                    source: "disk full".into(),
                });
            }
            Ok(())
        }
        fn is_damaged(&self, _: RecordTree, _: &[u8]) -> bool {
            false
        }
        fn corrupt_values(&self) -> u64 {
            0
        }
    }

    /// Polls `cond` (bounded, 5 s) until it holds.
    async fn wait_until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..5000 {
            if cond() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("never happened: {what}");
    }

    /// Proves waiters that queue while a flush is running are all served by one next
    /// flush: 1 + 1 flushes for 1 + 50 waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_during_a_flush_share_the_next_one() {
        let gate = Arc::new(Gate::default());
        let commit = GroupCommit::start(gate.clone()).unwrap();
        let first = tokio::spawn({
            let c = commit.clone();
            async move { c.durable().await }
        });
        // The first batch is in its flush, blocked in the gate.
        wait_until("first flush entered", || {
            gate.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let rest: Vec<_> = (0..50)
            .map(|_| {
                let c = commit.clone();
                tokio::spawn(async move { c.durable().await })
            })
            .collect();
        wait_until("50 waiters queued", || {
            lock(&commit.inner.state).waiters.len() == 50
        })
        .await;
        gate.release();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert_eq!(gate.flushes.load(Ordering::SeqCst), 2);
        assert_eq!((commit.flushes(), commit.waits()), (2, 51));
        commit.close();
    }

    /// Proves a failed flush fails every waiter of its batch, transient as the store said.
    #[tokio::test]
    async fn a_failed_flush_fails_its_waiters() {
        let gate = Arc::new(Gate::default());
        gate.fail.store(true, Ordering::SeqCst);
        gate.release();
        let commit = GroupCommit::start(gate.clone()).unwrap();
        let e = commit.durable().await.unwrap_err();
        assert!(e.is_transient());
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .to_string()
                .contains("flush"),
            "{e:?}"
        );
        commit.close();
    }

    /// Proves the first failed flush is recorded as the store's fault (for health and the
    /// supervisor), with its cause.
    #[tokio::test]
    async fn a_failed_flush_is_a_fault() {
        let gate = Arc::new(Gate::default());
        gate.release();
        let commit = GroupCommit::start(gate.clone()).unwrap();
        let fault = commit.fault();
        commit.durable().await.unwrap();
        assert!(fault.borrow().is_none());
        gate.fail.store(true, Ordering::SeqCst);
        commit.durable().await.unwrap_err();
        let cause = fault.borrow().clone().expect("fault recorded");
        assert!(cause.contains("disk full"), "{cause}");
        commit.close();
    }

    /// Proves a flusher that panics answers its batch and every later waiter at once
    /// (never a hang), non-transient, and records the fault.
    #[tokio::test]
    async fn a_panicking_flusher_answers_everyone() {
        let gate = Arc::new(Gate::default());
        gate.panic.store(true, Ordering::SeqCst);
        gate.release();
        let commit = GroupCommit::start(gate).unwrap();
        let within = |f| tokio::time::timeout(std::time::Duration::from_secs(5), f);
        let e = within(commit.durable())
            .await
            .expect("answered")
            .unwrap_err();
        assert!(!e.is_transient());
        let e = within(commit.durable())
            .await
            .expect("answered")
            .unwrap_err();
        assert!(e.to_string().contains("flush") && !e.is_transient(), "{e}");
        assert!(commit.fault().borrow().is_some());
        commit.close();
    }

    /// Proves close joins the thread, releases the store, and later waits fail fast.
    #[tokio::test]
    async fn close_releases_the_store() {
        let store: Arc<dyn RecordStore> = Arc::new(MemoryStore::new());
        let commit = GroupCommit::start(Arc::clone(&store)).unwrap();
        commit.durable().await.unwrap();
        commit.close();
        commit.close();
        assert_eq!(Arc::strong_count(&store), 1);
        assert!(commit.durable().await.unwrap_err().is_transient());
    }

    /// Proves the per-write mode flushes once per wait.
    #[tokio::test]
    async fn per_write_flushes_every_time() {
        let commit = GroupCommit::per_write(Arc::new(MemoryStore::new()));
        for _ in 0..3 {
            commit.durable().await.unwrap();
        }
        assert_eq!((commit.flushes(), commit.waits()), (3, 3));
    }
}
