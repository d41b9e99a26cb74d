//! Idempotency keys: a side effect happens once, however often workers retry (the
//! semantics of Stripe's `Idempotency-Key` and the IETF idempotency-key draft: in progress
//! = 409, mismatch = 422, the stored result replayed, stored errors included).
//!
//! This module owns the rules (`machine`, pure and exactly tested) and runs them over a
//! [`RecordStore`]: each call is one atomic [`RecordStore::update`] of the key's record, so
//! 32 concurrent `Begin`s see one another's writes and exactly one acquires. A call that
//! wrote (an acquired lock, a completed result, an abandon) is answered only after a
//! [`GroupCommit`] flush made it durable: a crash right after `ACQUIRED` must not let a
//! second worker acquire, and a crash after `Complete` must not lose the result.
//!
//! It must not read the clock (`now_ms` is passed in: Unix milliseconds, since records
//! outlive the process) nor know about gRPC. Keys are scoped by tenant
//! ([`keys::idempotency_key`]). Expired records read as absent at once; [`Sweep`] removes
//! them in bounded batches later.
//!
//! [`keys::idempotency_key`]: crate::store::keys::idempotency_key

mod machine;
mod record;
mod types;
mod usage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use machine::{BeginOutcome, Refusal};
pub use record::StoredResult;
pub use types::{
    BeginRequest, IdempotencyError, MAX_FINGERPRINT_LEN, MAX_KEY_LEN, MAX_LOCK_TTL, MAX_TTL,
    MIN_TTL, RecordView, Settings, Stats, check_key,
};

use crate::clock::ceil_ms;
use crate::store::keys::{self, RecordTree};
use crate::store::{GroupCommit, RecordStore, StoreError, Write};
use crate::sweeper::{Sweep, SweepReport};
use record::Record;
use types::check_ttl;

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    acquired: AtomicU64,
    in_progress: AtomicU64,
    replayed: AtomicU64,
    mismatched: AtomicU64,
    completed: AtomicU64,
    abandoned: AtomicU64,
    expired_removed: AtomicU64,
    undecodable: AtomicU64,
}

/// Idempotency records over a store. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn RecordStore>,
    commit: GroupCommit,
    settings: Settings,
    counters: Arc<Counters>,
    /// Where the next sweep batch starts.
    cursor: Arc<Mutex<Option<Vec<u8>>>>,
    /// The per-tenant caps on records and bytes.
    caps: Arc<crate::permits::caps::Caps>,
    /// What each tenant keeps, for those caps.
    usage: Arc<usage::Usage>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Adds one to a counter.
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A new random lock token (128 bits, hex). It tells holders apart (a superseded holder
/// cannot complete the new holder's attempt); it is not a secret: who may call at all is
/// for authentication to decide.
fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl Idempotency {
    /// Records in `store`, made durable through `commit`.
    #[must_use]
    pub fn new(store: Arc<dyn RecordStore>, commit: GroupCommit, settings: Settings) -> Self {
        Self {
            store,
            commit,
            settings,
            counters: Arc::default(),
            cursor: Arc::default(),
            caps: Arc::default(),
            usage: Arc::default(),
        }
    }

    /// Hold each tenant to `caps` (records and bytes), counting what the store holds now
    /// (one scan of the idempotency tree; blocking).
    ///
    /// # Errors
    /// Store failures of that scan.
    pub fn with_caps(mut self, caps: crate::permits::caps::Caps) -> Result<Self, StoreError> {
        self.caps = Arc::new(caps);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = self
                .store
                .scan(RecordTree::Idempotency, after.as_deref(), 4096)?;
            for e in &batch {
                self.usage.seen(tenant_of(&e.key), stored_len(e));
            }
            if batch.len() < 4096 {
                break;
            }
            after = batch.last().map(|e| e.key.clone());
        }
        self.usage.pass_done();
        Ok(self)
    }

    /// RESOURCE_EXHAUSTED when a record of `tenant` going from `old` to `new` bytes passes
    /// its caps (only growth is checked: shrinking and removing always pass).
    fn check_caps(
        &self,
        tenant: &str,
        old: Option<usize>,
        new: Option<usize>,
    ) -> Result<(), IdempotencyError> {
        let (max_records, max_bytes) = self.caps.idempotency(tenant);
        let kept = self.usage.of(tenant);
        if old.is_none() && new.is_some() && kept.records >= max_records as u64 {
            return Err(IdempotencyError::Exhausted {
                cap: "max_idempotency_records_per_tenant",
                limit: max_records,
                what: format!("{} idempotency records kept in this tenant", kept.records),
            });
        }
        let grows = new.unwrap_or(0).saturating_sub(old.unwrap_or(0)) as u64;
        if grows > 0 && kept.bytes.saturating_add(grows) > max_bytes as u64 {
            return Err(IdempotencyError::Exhausted {
                cap: "max_idempotency_bytes_per_tenant",
                limit: max_bytes,
                what: format!(
                    "{} idempotency bytes kept in this tenant, {grows} more asked",
                    kept.bytes
                ),
            });
        }
        Ok(())
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decodes a stored payload, counting (and treating as absent) one that fails.
    fn decode(&self, key: &[u8], bytes: Option<&[u8]>) -> Option<Record> {
        let bytes = bytes?;
        match Record::decode(bytes) {
            Ok(r) => Some(r),
            Err(error) => {
                bump(&self.counters.undecodable);
                tracing::warn!(key = %keys::display_key(key), %error, "undecodable idempotency record reads as absent");
                None
            }
        }
    }

    /// Runs `step` as one atomic update of `key`'s record, then waits until a write (if
    /// any) is durable. `step` may run more than once; the last run's output is returned.
    async fn update<T: Send + 'static>(
        &self,
        tenant: &str,
        key: &str,
        mut step: impl FnMut(Option<Record>) -> (T, Write) + Send + 'static,
    ) -> Result<T, IdempotencyError> {
        let skey = keys::idempotency_key(tenant, key).map_err(|e| IdempotencyError::Invalid {
            field: "tenant",
            message: e.to_string(),
        })?;
        let this = self.clone();
        let tenant_owned = tenant.to_owned();
        let (out, changed, damaged) = tokio::task::spawn_blocking(move || {
            let mut out = None;
            let mut damaged = false;
            // (before, after) sizes of the last run, and its cap refusal if any.
            let mut sizes = (None, None);
            let mut over = None;
            let changed = this
                .store
                .update(RecordTree::Idempotency, &skey, &mut |cur| {
                    // A damaged record is not an absent one: reading it as absent would
                    // hand out the key again and run the side effect twice.
                    let record = match cur {
                        Some(bytes) => match Record::decode(bytes) {
                            Ok(r) => Some(r),
                            Err(error) => {
                                tracing::warn!(key = %keys::display_key(&skey), %error, "undecodable idempotency record: failing closed");
                                damaged = true;
                                return Write::Keep;
                            }
                        },
                        None if this.store.is_damaged(RecordTree::Idempotency, &skey) => {
                            damaged = true;
                            return Write::Keep;
                        }
                        None => None,
                    };
                    damaged = false;
                    let (o, w) = step(record);
                    let old = cur.map(|b| skey.len() + b.len());
                    let new = match &w {
                        Write::Put(b) => Some(skey.len() + b.len()),
                        Write::Delete => None,
                        Write::Keep => old,
                    };
                    over = this.check_caps(&tenant_owned, old, new).err();
                    if over.is_some() {
                        return Write::Keep;
                    }
                    sizes = (old, new);
                    out = Some(o);
                    w
                })?;
            if let Some(e) = over {
                return Ok(Err(e));
            }
            if changed {
                this.usage.moved(&tenant_owned, sizes.0, sizes.1);
            }
            Ok::<_, StoreError>(Ok((out, changed, damaged)))
        })
        .await???;
        if damaged {
            bump(&self.counters.undecodable);
            return Err(IdempotencyError::Damaged {
                key: key.to_owned(),
            });
        }
        let out = out.ok_or_else(|| StoreError::Backend {
            op: "update",
            transient: false,
            source: "the store never ran the update".into(),
        })?;
        if changed {
            self.commit.durable().await?;
        }
        Ok(out)
    }

    /// `Begin`: acquire `key`, or learn who holds it or what it returned.
    ///
    /// # Errors
    /// [`IdempotencyError::Invalid`] for a bad key, fingerprint or TTL (`lock_ttl` over
    /// `ttl` included); store failures.
    pub async fn begin(
        &self,
        tenant: &str,
        key: &str,
        req: BeginRequest,
        now_ms: u64,
    ) -> Result<BeginOutcome, IdempotencyError> {
        check_key(key)?;
        if req.fingerprint.len() > MAX_FINGERPRINT_LEN {
            return Err(IdempotencyError::Invalid {
                field: "fingerprint",
                message: format!(
                    "{} bytes, at most {MAX_FINGERPRINT_LEN} allowed",
                    req.fingerprint.len()
                ),
            });
        }
        check_ttl("ttl", req.ttl, MAX_TTL)?;
        check_ttl("lock_ttl", req.lock_ttl, MAX_LOCK_TTL)?;
        let ttl = req.ttl.unwrap_or(self.settings.ttl);
        let lock_ttl = match req.lock_ttl {
            Some(l) if l > ttl => {
                return Err(IdempotencyError::Invalid {
                    field: "lock_ttl",
                    message: format!(
                        "{} is longer than the record ttl {}",
                        humantime::format_duration(l),
                        humantime::format_duration(ttl)
                    ),
                });
            }
            Some(l) => l,
            None => self.settings.lock_ttl.min(ttl),
        };
        let (ttl_ms, lock_ttl_ms, token) = (ceil_ms(ttl), ceil_ms(lock_ttl), new_token());
        let fingerprint = req.fingerprint;
        let outcome = self
            .update(tenant, key, move |cur| {
                let step = machine::BeginStep {
                    fingerprint: &fingerprint,
                    ttl_ms,
                    lock_ttl_ms,
                    token: &token,
                };
                let (out, write) = machine::begin(cur, &step, now_ms);
                (out, write.map_or(Write::Keep, |r| Write::Put(r.encode())))
            })
            .await?;
        bump(match &outcome {
            BeginOutcome::Acquired { .. } => &self.counters.acquired,
            BeginOutcome::InProgress { .. } => &self.counters.in_progress,
            BeginOutcome::Completed { .. } => &self.counters.replayed,
            BeginOutcome::FingerprintMismatch => &self.counters.mismatched,
        });
        Ok(outcome)
    }

    /// `Complete`: store the result of the call made under `key`; durable when it returns.
    /// `lock_token` (from `Begin`), when given, must be the current holder's.
    ///
    /// # Errors
    /// [`IdempotencyError::Refused`] when not begun, already completed, not the holder or
    /// the lock expired (nothing changed); [`IdempotencyError::Invalid`] for a bad key or
    /// an oversized result; store failures.
    pub async fn complete(
        &self,
        tenant: &str,
        key: &str,
        lock_token: Option<String>,
        result: StoredResult,
        now_ms: u64,
    ) -> Result<(), IdempotencyError> {
        check_key(key)?;
        let size = prost::Message::encoded_len(&result);
        if size > self.settings.max_result_bytes {
            return Err(IdempotencyError::Invalid {
                field: "result",
                message: format!(
                    "{size} bytes encoded, at most {} allowed",
                    self.settings.max_result_bytes
                ),
            });
        }
        self.update(tenant, key, move |cur| {
            match machine::complete(cur, lock_token.as_deref(), &result, now_ms) {
                Ok(r) => (Ok(()), Write::Put(r.encode())),
                Err(refusal) => (Err(refusal), Write::Keep),
            }
        })
        .await?
        .map_err(|refusal| IdempotencyError::Refused {
            key: key.to_owned(),
            refusal,
        })?;
        bump(&self.counters.completed);
        Ok(())
    }

    /// `Abandon`: drop the in-progress lock so another attempt may Begin (the record is
    /// removed; durable when it returns).
    ///
    /// # Errors
    /// [`IdempotencyError::Refused`] when there is no live record, it is completed, or the
    /// token is not the holder's; store failures.
    pub async fn abandon(
        &self,
        tenant: &str,
        key: &str,
        lock_token: Option<String>,
        now_ms: u64,
    ) -> Result<(), IdempotencyError> {
        check_key(key)?;
        self.update(tenant, key, move |cur| {
            match machine::abandon(cur, lock_token.as_deref(), now_ms) {
                Ok(()) => (Ok(()), Write::Delete),
                Err(refusal) => (Err(refusal), Write::Keep),
            }
        })
        .await?
        .map_err(|refusal| IdempotencyError::Refused {
            key: key.to_owned(),
            refusal,
        })?;
        bump(&self.counters.abandoned);
        Ok(())
    }

    /// `Get`: a key's live record.
    ///
    /// # Errors
    /// [`IdempotencyError::NotFound`] when there is none; store failures.
    pub async fn get(
        &self,
        tenant: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<RecordView, IdempotencyError> {
        check_key(key)?;
        let skey = keys::idempotency_key(tenant, key).map_err(|e| IdempotencyError::Invalid {
            field: "tenant",
            message: e.to_string(),
        })?;
        let this = self.clone();
        let (record, damaged) = tokio::task::spawn_blocking(move || {
            let raw = this.store.get(RecordTree::Idempotency, &skey)?;
            let damaged = match &raw {
                Some(bytes) => Record::decode(bytes).is_err(),
                None => this.store.is_damaged(RecordTree::Idempotency, &skey),
            };
            Ok::<_, StoreError>((this.decode(&skey, raw.as_deref()), damaged))
        })
        .await??;
        if damaged {
            return Err(IdempotencyError::Damaged {
                key: key.to_owned(),
            });
        }
        let r = record
            .filter(|r| r.live(now_ms))
            .ok_or_else(|| IdempotencyError::NotFound {
                key: key.to_owned(),
            })?;
        let lock_expires_at_ms = r.result.is_none().then_some(r.lock_expires_at_ms);
        Ok(RecordView {
            fingerprint: r.fingerprint,
            result: r.result,
            expires_at_ms: r.expires_at_ms,
            lock_expires_at_ms,
        })
    }

    /// Counters since start.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            acquired: load(&c.acquired),
            in_progress: load(&c.in_progress),
            replayed: load(&c.replayed),
            mismatched: load(&c.mismatched),
            completed: load(&c.completed),
            abandoned: load(&c.abandoned),
            expired_removed: load(&c.expired_removed),
            corrupt_values: self
                .store
                .corrupt_values()
                .saturating_add(load(&c.undecodable)),
        }
    }
}

/// The tenant of a stored idempotency key (empty for a key of no known layout, which then
/// counts against no real tenant).
fn tenant_of(key: &[u8]) -> &str {
    keys::split_idempotency_key(key).map_or("", |(t, _)| t)
}

/// What a scanned record costs against the byte cap (a damaged one: its key).
fn stored_len(e: &crate::store::Scanned) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, Vec::len)
}

impl Sweep for Idempotency {
    fn name(&self) -> &'static str {
        "idempotency"
    }

    /// Examines up to `sweep_batch` records after the cursor and removes the expired,
    /// damaged or undecodable ones; each removal re-checks the record atomically, so a key
    /// begun again meanwhile is kept.
    fn sweep_batch(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        let limit = self.settings.sweep_batch.max(1);
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = self
            .store
            .scan(RecordTree::Idempotency, cursor.as_deref(), limit)?;
        let done = batch.len() < limit;
        let mut removed = 0u64;
        let shared = self.store.shared();
        for entry in &batch {
            let tenant = tenant_of(&entry.key);
            // A damaged record stays (its key fails closed); only expired ones go.
            let stale = entry
                .value
                .as_deref()
                .and_then(|v| Record::decode(v).ok())
                .is_some_and(|r| !r.live(now_ms));
            if !stale {
                if shared {
                    self.usage.seen(tenant, stored_len(entry));
                }
                continue;
            }
            let mut old = None;
            let changed = self
                .store
                .update(RecordTree::Idempotency, &entry.key, &mut |cur| {
                    old = cur.map(|b| entry.key.len() + b.len());
                    match cur.map(Record::decode) {
                        Some(Ok(r)) if !r.live(now_ms) => Write::Delete,
                        _ => Write::Keep,
                    }
                })?;
            if changed {
                self.usage.moved(tenant, old, None);
            } else if shared {
                self.usage.seen(tenant, stored_len(entry));
            }
            removed += u64::from(changed);
        }
        if done && shared {
            self.usage.pass_done();
        }
        *cursor = if done {
            None
        } else {
            batch.last().map(|e| e.key.clone())
        };
        self.counters
            .expired_removed
            .fetch_add(removed, Ordering::Relaxed);
        Ok(SweepReport {
            examined: batch.len(),
            removed,
            done,
        })
    }
}

#[cfg(test)]
mod tests;
