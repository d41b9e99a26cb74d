//! The idempotency state machine as pure functions: `(current record, request, now)` ->
//! (answer, record to write). No store, no clock, no async: the caller runs each function
//! inside the store's atomic read-modify-write, so two callers never decide on the same
//! stale record. Every rule of the contract is here, and tested here exactly.
//!
//! States of one key (an expired record counts as no record at all):
//! - none --Begin--> in progress (ACQUIRED, a fresh lock token);
//! - in progress, lock live --Begin--> unchanged (IN_PROGRESS, retry after the lock);
//! - in progress, lock expired --Begin--> in progress with a new holder (ACQUIRED);
//! - in progress, lock live, holder --Complete--> completed;
//! - in progress --Abandon (holder)--> none;
//! - completed --Begin--> unchanged (COMPLETED, the stored result);
//! - any, other fingerprint --Begin--> unchanged (FINGERPRINT_MISMATCH).
//!
//! Everything else is refused with a [`Refusal`] and changes nothing.

use std::time::Duration;

use super::record::{Record, StoredResult};

/// What `Begin` asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BeginStep<'a> {
    /// The request's digest.
    pub(crate) fingerprint: &'a str,
    /// How long the record is kept, in ms (> 0).
    pub(crate) ttl_ms: u64,
    /// How long the lock is held, in ms (> 0, <= `ttl_ms`).
    pub(crate) lock_ttl_ms: u64,
    /// The token a new holder gets.
    pub(crate) token: &'a str,
}

/// The answer to `Begin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    /// The caller holds the key: make the call, then Complete or Abandon.
    Acquired {
        /// Pass it to Complete / Abandon to prove you are the holder.
        lock_token: String,
        /// When the lock ends (Unix ms).
        lock_expires_at_ms: u64,
    },
    /// Another caller holds the key.
    InProgress {
        /// How long until its lock ends (at least 1 ms).
        retry_after: Duration,
    },
    /// The call was made; here is its result.
    Completed {
        /// The stored result.
        result: StoredResult,
    },
    /// The key was used for a request with another fingerprint.
    FingerprintMismatch,
}

/// Why a Complete or Abandon was refused; the record is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live record: never begun, abandoned, or expired.
    NotBegun,
    /// The key is completed already.
    AlreadyCompleted,
    /// The caller's token is not the current holder's (its lock expired and another caller
    /// acquired the key).
    NotHolder,
    /// The holder's lock expired (nobody else acquired it yet: Begin again).
    LockExpired,
}

/// `Begin` on `current` at `now`: the answer, and the record to write if any.
pub(crate) fn begin(
    current: Option<Record>,
    step: &BeginStep<'_>,
    now_ms: u64,
) -> (BeginOutcome, Option<Record>) {
    let current = current.filter(|r| r.live(now_ms));
    if let Some(r) = &current {
        if r.fingerprint != step.fingerprint {
            return (BeginOutcome::FingerprintMismatch, None);
        }
        if let Some(result) = &r.result {
            let result = result.clone();
            return (BeginOutcome::Completed { result }, None);
        }
        if now_ms < r.lock_expires_at_ms {
            let wait = r.lock_expires_at_ms.saturating_sub(now_ms).max(1);
            let retry_after = Duration::from_millis(wait);
            return (BeginOutcome::InProgress { retry_after }, None);
        }
    }
    // No live record, or its holder's lock expired: the caller takes the key.
    let expires_at_ms = now_ms.saturating_add(step.ttl_ms);
    let lock_expires_at_ms = now_ms.saturating_add(step.lock_ttl_ms).min(expires_at_ms);
    let record = Record {
        fingerprint: step.fingerprint.to_owned(),
        created_at_ms: current.map_or(now_ms, |r| r.created_at_ms),
        expires_at_ms,
        lock_expires_at_ms,
        lock_token: step.token.to_owned(),
        result: None,
        completed_at_ms: 0,
    };
    let outcome = BeginOutcome::Acquired {
        lock_token: step.token.to_owned(),
        lock_expires_at_ms,
    };
    (outcome, Some(record))
}

/// Checks that `token` (if given) may act on the in-progress record `r`.
fn check_holder(r: &Record, token: Option<&str>) -> Result<(), Refusal> {
    if r.result.is_some() {
        return Err(Refusal::AlreadyCompleted);
    }
    if token.is_some_and(|t| t != r.lock_token) {
        return Err(Refusal::NotHolder);
    }
    Ok(())
}

/// `Complete` on `current` at `now`: the completed record to write.
///
/// # Errors
/// [`Refusal`] when there is no live record, it is completed already, the token is not the
/// holder's, or the lock expired.
pub(crate) fn complete(
    current: Option<Record>,
    token: Option<&str>,
    result: &StoredResult,
    now_ms: u64,
) -> Result<Record, Refusal> {
    let r = current
        .filter(|r| r.live(now_ms))
        .ok_or(Refusal::NotBegun)?;
    check_holder(&r, token)?;
    if now_ms >= r.lock_expires_at_ms {
        return Err(Refusal::LockExpired);
    }
    Ok(Record {
        result: Some(result.clone()),
        completed_at_ms: now_ms,
        lock_expires_at_ms: 0,
        ..r
    })
}

/// `Abandon` on `current` at `now`: `Ok` means delete the record.
///
/// # Errors
/// [`Refusal`] when there is no live record, it is completed, or the token is not the
/// holder's. An expired lock may still be abandoned by its holder.
pub(crate) fn abandon(
    current: Option<Record>,
    token: Option<&str>,
    now_ms: u64,
) -> Result<(), Refusal> {
    let r = current
        .filter(|r| r.live(now_ms))
        .ok_or(Refusal::NotBegun)?;
    check_holder(&r, token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: u64 = 10_000;
    const LOCK: u64 = 1_000;

    fn step<'a>(fp: &'a str, token: &'a str) -> BeginStep<'a> {
        BeginStep {
            fingerprint: fp,
            ttl_ms: TTL,
            lock_ttl_ms: LOCK,
            token,
        }
    }

    fn result(body: &[u8]) -> StoredResult {
        StoredResult {
            status_code: 200,
            body: body.to_vec(),
            ..StoredResult::default()
        }
    }

    /// Begins "a" at `now` on nothing and returns the record.
    fn acquired(now: u64) -> Record {
        begin(None, &step("fp", "a"), now).1.unwrap()
    }

    /// Proves a first Begin acquires with the token and a lock bounded by the record TTL.
    #[test]
    fn first_begin_acquires() {
        let (out, rec) = begin(None, &step("fp", "a"), 100);
        assert_eq!(
            out,
            BeginOutcome::Acquired {
                lock_token: "a".into(),
                lock_expires_at_ms: 1_100
            }
        );
        let rec = rec.unwrap();
        assert_eq!((rec.expires_at_ms, rec.created_at_ms), (10_100, 100));
        let short = BeginStep {
            ttl_ms: 10,
            ..step("fp", "a")
        };
        let (_, rec) = begin(None, &short, 100);
        assert_eq!(rec.unwrap().lock_expires_at_ms, 110);
    }

    /// Proves a second Begin while the lock is live is IN_PROGRESS until the lock ends,
    /// with the exact wait, and writes nothing.
    #[test]
    fn begin_while_held_is_in_progress() {
        let rec = acquired(0);
        let (out, write) = begin(Some(rec.clone()), &step("fp", "b"), 400);
        let want = Duration::from_millis(600);
        assert_eq!(out, BeginOutcome::InProgress { retry_after: want });
        assert_eq!(write, None);
        let (out, _) = begin(Some(rec), &step("fp", "b"), 999);
        let want = Duration::from_millis(1);
        assert_eq!(out, BeginOutcome::InProgress { retry_after: want });
    }

    /// Proves a lock that expired (holder crashed) lets the next Begin acquire, with its
    /// own token, keeping the creation time.
    #[test]
    fn expired_lock_is_reacquired() {
        let rec = acquired(0);
        let (out, write) = begin(Some(rec), &step("fp", "b"), 1_000);
        assert!(matches!(out, BeginOutcome::Acquired { lock_token, .. } if lock_token == "b"));
        let write = write.unwrap();
        assert_eq!((write.lock_token.as_str(), write.created_at_ms), ("b", 0));
    }

    /// Proves another fingerprint is a mismatch in every state, and writes nothing.
    #[test]
    fn other_fingerprint_is_a_mismatch() {
        let held = acquired(0);
        let done = complete(Some(held.clone()), Some("a"), &result(b"r"), 1).unwrap();
        for r in [held, done] {
            let (out, write) = begin(Some(r), &step("other", "b"), 2);
            assert_eq!((out, write), (BeginOutcome::FingerprintMismatch, None));
        }
    }

    /// Proves a completed key replays its result to every later Begin, unchanged.
    #[test]
    fn completed_replays_the_result() {
        let done = complete(Some(acquired(0)), Some("a"), &result(b"r"), 5).unwrap();
        assert_eq!(done.completed_at_ms, 5);
        let (out, write) = begin(Some(done), &step("fp", "b"), 9_000);
        let want = BeginOutcome::Completed {
            result: result(b"r"),
        };
        assert_eq!((out, write), (want, None));
    }

    /// Proves an expired record is gone for every operation, and a Begin starts afresh
    /// (even with another fingerprint).
    #[test]
    fn expired_record_is_absent() {
        let done = complete(Some(acquired(0)), None, &result(b"r"), 5).unwrap();
        let (out, _) = begin(Some(done.clone()), &step("new", "b"), TTL);
        assert!(matches!(out, BeginOutcome::Acquired { .. }));
        let r = complete(Some(done.clone()), None, &result(b"x"), TTL);
        assert_eq!(r, Err(Refusal::NotBegun));
        assert_eq!(abandon(Some(done), None, TTL), Err(Refusal::NotBegun));
    }

    /// Proves each refused Complete names its reason: never begun, double, wrong holder,
    /// expired lock.
    #[test]
    fn complete_refusals() {
        let r = result(b"r");
        assert_eq!(complete(None, None, &r, 0), Err(Refusal::NotBegun));
        let held = acquired(0);
        let done = complete(Some(held.clone()), None, &r, 1).unwrap();
        assert_eq!(
            complete(Some(done), Some("a"), &r, 2),
            Err(Refusal::AlreadyCompleted)
        );
        assert_eq!(
            complete(Some(held.clone()), Some("b"), &r, 2),
            Err(Refusal::NotHolder)
        );
        assert_eq!(
            complete(Some(held.clone()), Some("a"), &r, LOCK),
            Err(Refusal::LockExpired)
        );
        assert_eq!(
            complete(Some(held), None, &r, LOCK),
            Err(Refusal::LockExpired)
        );
    }

    /// Proves the holder whose lock expired and was taken over cannot complete: the new
    /// holder's token is required.
    #[test]
    fn superseded_holder_cannot_complete() {
        let (_, taken) = begin(Some(acquired(0)), &step("fp", "b"), 1_500);
        let taken = taken.unwrap();
        let r = result(b"r");
        assert_eq!(
            complete(Some(taken.clone()), Some("a"), &r, 1_600),
            Err(Refusal::NotHolder)
        );
        assert!(complete(Some(taken), Some("b"), &r, 1_600).is_ok());
    }

    /// Proves Abandon frees an in-progress key for its holder only, and refuses completed
    /// or unknown keys.
    #[test]
    fn abandon_rules() {
        let held = acquired(0);
        assert_eq!(abandon(Some(held.clone()), Some("a"), 1), Ok(()));
        assert_eq!(abandon(Some(held.clone()), None, 5_000), Ok(()));
        assert_eq!(
            abandon(Some(held.clone()), Some("b"), 1),
            Err(Refusal::NotHolder)
        );
        let done = complete(Some(held), None, &result(b"r"), 1).unwrap();
        assert_eq!(abandon(Some(done), None, 2), Err(Refusal::AlreadyCompleted));
        assert_eq!(abandon(None, None, 2), Err(Refusal::NotBegun));
    }

    /// One operation of the model check.
    #[derive(Debug, Clone)]
    enum Op {
        Begin(bool),
        Complete(u8),
        Abandon,
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Begin),
            (0u8..4).prop_map(Op::Complete),
            Just(Op::Abandon),
            (0u64..1_500).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Proves, over random schedules of Begin / Complete / Abandon / time: at most one
        /// caller holds a live lock at any instant, a completed result never changes until
        /// the record expires, and refusals write nothing.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 0..60)) {
            let mut now = 0u64;
            let mut stored: Option<Record> = None;
            let mut tokens = 0u32;
            let mut holder: Option<(String, u64)> = None;
            let mut completed: Option<(StoredResult, u64)> = None;
            for op in ops {
                match op {
                    Op::Wait(ms) => now += ms,
                    Op::Begin(same_fp) => {
                        tokens += 1;
                        let token = format!("t{tokens}");
                        let fp = if same_fp { "fp" } else { "other" };
                        let (out, write) = begin(stored.clone(), &step(fp, &token), now);
                        if let BeginOutcome::Acquired { lock_token, lock_expires_at_ms } = &out {
                            let live = holder.as_ref().is_some_and(|(_, until)| now < *until);
                            let record_live = stored.as_ref().is_some_and(|r| r.live(now));
                            prop_assert!(!(live && record_live), "two live holders");
                            holder = Some((lock_token.clone(), *lock_expires_at_ms));
                            completed = None;
                        } else {
                            prop_assert_eq!(write.clone(), None);
                        }
                        if let (BeginOutcome::Completed { result }, Some((want, _))) = (&out, &completed) {
                            prop_assert_eq!(result, want);
                        }
                        if let Some(w) = write { stored = Some(w); }
                    }
                    Op::Complete(body) => {
                        let token = holder.as_ref().map(|(t, _)| t.clone());
                        let r = result(&[body]);
                        if let Ok(w) = complete(stored.clone(), token.as_deref(), &r, now) {
                            prop_assert!(completed.is_none());
                            completed = Some((r, w.expires_at_ms));
                            stored = Some(w);
                        }
                    }
                    Op::Abandon => {
                        let token = holder.as_ref().map(|(t, _)| t.clone());
                        if abandon(stored.clone(), token.as_deref(), now).is_ok() {
                            stored = None;
                            holder = None;
                        }
                    }
                }
                if let (Some((want, until)), Some(r)) = (&completed, &stored)
                    && now < *until
                {
                    prop_assert_eq!(r.result.as_ref(), Some(want));
                }
            }
        }
    }
}
