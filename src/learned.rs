//! What buckets learned about their upstreams, kept in the store so a restarted permitd
//! does not storm: learned limits, the adaptive rate and the cooldown in force, one record
//! per bucket in the `learned` record tree (embedded mode; a cluster keeps them in Redis
//! already).
//!
//! Feedback marks a bucket ([`Registry::mark_learned`]); [`spawn`] writes the marked
//! buckets every [`EVERY`] (so a bucket whose adaptive rate moves with every success costs
//! at most a couple of writes a second) and flushes once per round; [`persist`] runs one
//! last round at shutdown. [`restore`] puts the records back at start-up, skipping any whose
//! resource was since redefined (the record names its definition's checksum): a resource
//! change starts afresh, as it does live.
//!
//! The record is a few lines of text, versioned, and read strictly: a record this version
//! cannot read is skipped with a warning, never half-applied.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;

use crate::permits::adaptive::Step;
use crate::permits::bucket::{Basis, LearnedState};
use crate::permits::limit::{MAX_AMOUNT, MAX_PERIOD_NS, MIN_PERIOD_NS, Rate};
use crate::permits::{Registry, ResourceDef};
use crate::store::keys::{self, DEFAULT_TENANT, RecordTree};
use crate::store::{RecordStore, StoreError, Write};

/// How often marked buckets are written.
pub const EVERY: Duration = Duration::from_millis(500);
/// Records older than this are dropped at start-up instead of restored: the upstream may
/// have changed since, and slow start learns it again. Also bounds the records of
/// partitions that came and went.
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);

const MAGIC: &str = "permitd-learned 1";

/// Why a stored record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a record this version wrote.
    #[error("learned record: {0}")]
    Malformed(&'static str),
}

/// A record as stored: what the bucket learned, under which definition, and the cooldown
/// as a wall-clock instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Checksum of the definition the state was learned under.
    pub definition: u32,
    /// The state; its `cooldown_until` is unused (see `cooldown`).
    pub state: LearnedState,
    /// The cooldown's end.
    pub cooldown: Option<SystemTime>,
    /// When the record was written.
    pub written: SystemTime,
}

/// Checksum of a definition as stored (its proto encoding).
#[must_use]
pub fn definition_sum(def: &ResourceDef) -> u32 {
    crc32fast::hash(&crate::server::convert::resource_to_proto(def).encode_to_vec())
}

fn basis_name(b: Basis) -> &'static str {
    match b {
        Basis::Configured => "configured",
        Basis::StatedWindow => "stated",
        Basis::FittedWindow => "fitted",
        Basis::ProbedWindow => "probed",
        Basis::ConfiguredWindow => "configured-window",
        Basis::DialectWindow => "dialect-window",
        Basis::Adaptive => "adaptive",
    }
}

fn basis_of(s: &str) -> Option<Basis> {
    Some(match s {
        "stated" => Basis::StatedWindow,
        "fitted" => Basis::FittedWindow,
        "probed" => Basis::ProbedWindow,
        "configured-window" => Basis::ConfiguredWindow,
        "dialect-window" => Basis::DialectWindow,
        _ => return None,
    })
}

/// Encode a record; dimensions by name, so a record survives a reordering of dimensions.
#[must_use]
pub fn encode(def: &ResourceDef, r: &Record) -> Vec<u8> {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut o = format!(
        "{MAGIC}\ndef {:08x}\nwritten {}\n",
        r.definition,
        ms(r.written)
    );
    if let Some(at) = r.cooldown {
        let _ = writeln!(o, "cooldown {}", ms(at));
    }
    for &(dim, rate, basis) in &r.state.limits {
        if let Some(name) = def.dimensions.get(dim) {
            let _ = writeln!(
                o,
                "limit {name} {} {} {} {}",
                rate.amount,
                rate.period_ns,
                rate.burst,
                basis_name(basis)
            );
        }
    }
    if let Some((milli, incr, step, est)) = r.state.adaptive {
        let step = match step {
            Step::Ramp => "ramp",
            Step::Cut => "cut",
        };
        let _ = writeln!(o, "adaptive {milli} {incr} {step} {est}");
    }
    o.into_bytes()
}

/// Decode a record against the current definition (dimensions it no longer has are
/// dropped); every figure is range-checked, as any input from disk.
///
/// # Errors
/// [`RecordError::Malformed`] for anything this version did not write.
pub fn decode(def: &ResourceDef, bytes: &[u8]) -> Result<Record, RecordError> {
    let bad = RecordError::Malformed;
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("unknown version"));
    }
    let mut r = Record {
        definition: 0,
        state: LearnedState {
            limits: Vec::new(),
            adaptive: None,
            cooldown_until: 0,
        },
        cooldown: None,
        written: UNIX_EPOCH,
    };
    let num = |s: Option<&str>| -> Result<u64, RecordError> {
        s.and_then(|v| v.parse().ok()).ok_or(bad("bad number"))
    };
    for line in lines {
        let mut f = line.split(' ');
        match f.next() {
            Some("def") => {
                r.definition = f
                    .next()
                    .and_then(|v| u32::from_str_radix(v, 16).ok())
                    .ok_or(bad("bad definition checksum"))?;
            }
            Some("written") => {
                r.written = UNIX_EPOCH + Duration::from_millis(num(f.next())?);
            }
            Some("cooldown") => {
                r.cooldown = Some(UNIX_EPOCH + Duration::from_millis(num(f.next())?));
            }
            Some("limit") => {
                let name = f.next().ok_or(bad("no dimension"))?;
                let rate = Rate {
                    amount: num(f.next())?,
                    period_ns: num(f.next())?,
                    burst: num(f.next())?,
                };
                let basis = f.next().and_then(basis_of).ok_or(bad("bad basis"))?;
                let in_range = (1..=MAX_AMOUNT).contains(&rate.amount)
                    && (1..=MAX_AMOUNT).contains(&rate.burst)
                    && (MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&rate.period_ns);
                if !in_range {
                    return Err(bad("limit out of range"));
                }
                if let Some(dim) = def.dimension_index(name) {
                    r.state.limits.push((dim, rate, basis));
                }
            }
            Some("adaptive") => {
                let milli = num(f.next())?;
                let incr = num(f.next())?;
                let step = match f.next() {
                    Some("ramp") => Step::Ramp,
                    Some("cut") => Step::Cut,
                    _ => return Err(bad("bad step")),
                };
                let est = num(f.next())?;
                if !(1..=MAX_AMOUNT).contains(&milli) {
                    return Err(bad("adaptive rate out of range"));
                }
                r.state.adaptive = Some((milli, incr, step, est));
            }
            Some("") | None => {}
            Some(_) => return Err(bad("unknown line")),
        }
    }
    Ok(r)
}

/// Write what every marked bucket learned (a bucket with nothing left to keep deletes its
/// record), then flush. Blocking: call it from `spawn_blocking`.
///
/// # Errors
/// The store's, when a write or the flush fails (the buckets are marked again, so the next
/// round retries them).
pub fn persist(registry: &Registry, store: &dyn RecordStore) -> Result<usize, StoreError> {
    let marked = registry.take_learned();
    let mut written = 0;
    for (i, (resource, partition)) in marked.iter().enumerate() {
        let Ok(key) = keys::learned_key(DEFAULT_TENANT, resource, partition) else {
            continue;
        };
        let value = registry
            .learned_state(resource, partition)
            .filter(|(_, s, _)| !s.is_empty())
            .map(|(def, state, cooldown)| {
                let r = Record {
                    definition: definition_sum(&def),
                    state,
                    cooldown,
                    written: SystemTime::now(),
                };
                encode(&def, &r)
            });
        let res = store.update(RecordTree::Learned, &key, &mut |_| match &value {
            Some(v) => Write::Put(v.clone()),
            None => Write::Delete,
        });
        match res {
            Ok(changed) => written += usize::from(changed),
            Err(e) => {
                for (r, p) in marked.iter().skip(i) {
                    registry.mark_learned(r, p);
                }
                return Err(e);
            }
        }
    }
    if written > 0 {
        store.flush()?;
    }
    Ok(written)
}

/// Write marked buckets every [`EVERY`] until aborted.
pub fn spawn(registry: Registry, store: Arc<dyn RecordStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (r, s) = (registry.clone(), Arc::clone(&store));
            match tokio::task::spawn_blocking(move || persist(&r, s.as_ref())).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "keeping learned limits failed"),
                Err(error) => tracing::warn!(%error, "keeping learned limits panicked"),
            }
        }
    })
}

/// The key of the record that says the store has served before (not a bucket's key: the
/// restore skips it).
const STARTED: &[u8] = b"\xffstarted";

/// Whether this store served a permitd before, and mark that it now has. Blocking.
///
/// # Errors
/// The store's, when it cannot be read or written.
pub fn restarted(store: &dyn RecordStore) -> Result<bool, StoreError> {
    let before = store.get(RecordTree::Learned, STARTED)?.is_some();
    if !before {
        store.update(RecordTree::Learned, STARTED, &mut |_| {
            Write::Put(b"1".to_vec())
        })?;
        store.flush()?;
    }
    Ok(before)
}

/// Put every stored record back into the registry; returns how many were restored.
/// Records of unknown or redefined resources, and unreadable ones, are skipped (and the
/// latter logged). Blocking reads: call it from `spawn_blocking`.
///
/// # Errors
/// The store's, when it cannot be scanned.
pub fn restore(registry: &Registry, store: &dyn RecordStore) -> Result<usize, StoreError> {
    let mut after: Option<Vec<u8>> = None;
    let mut restored = 0;
    // Records no longer worth keeping (stale, redefined, unknown, unreadable): removed once
    // the scan is over, so they do not pile up.
    let mut stale: Vec<Vec<u8>> = Vec::new();
    let fresh = |r: &Record| {
        SystemTime::now()
            .duration_since(r.written)
            .is_ok_and(|age| age <= KEEP_FOR)
    };
    loop {
        let page = store.scan(RecordTree::Learned, after.as_deref(), 256)?;
        let done = page.len() < 256;
        for entry in &page {
            let Ok((_, resource, partition)) = keys::split_learned_key(&entry.key) else {
                continue;
            };
            // Resources made on first use from the template count as defined.
            let def = registry.definition(resource).ok();
            let (Some(value), Some(def)) = (&entry.value, def) else {
                stale.push(entry.key.clone());
                continue;
            };
            match decode(&def, value) {
                Ok(r) if r.definition == definition_sum(&def) && fresh(&r) => {
                    match registry.restore_learned(resource, partition, r.state, r.cooldown) {
                        Ok(()) => restored += 1,
                        Err(error) => tracing::warn!(%resource, %error, "learned state skipped"),
                    }
                }
                Ok(_) => stale.push(entry.key.clone()),
                Err(error) => {
                    tracing::warn!(%resource, %error, "learned state skipped");
                    stale.push(entry.key.clone());
                }
            }
        }
        after = page.last().map(|e| e.key.clone());
        if done || after.is_none() {
            break;
        }
    }
    for key in &stale {
        store.update(RecordTree::Learned, key, &mut |_| Write::Delete)?;
    }
    if !stale.is_empty() {
        store.flush()?;
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> ResourceDef {
        let mut d = crate::server::convert::resource_from_proto(
            &crate::proto::Resource {
                name: "r".into(),
                dimensions: vec!["tokens".into()],
                ..Default::default()
            },
            "resource",
        )
        .unwrap();
        d.limits_known = false;
        d
    }

    /// A record round-trips, dimensions by name; garbage and out-of-range figures are
    /// refused whole.
    #[test]
    fn round_trip_and_refusals() {
        let d = def();
        let r = Record {
            definition: definition_sum(&d),
            state: LearnedState {
                limits: vec![
                    (
                        1,
                        Rate {
                            amount: 30_000,
                            period_ns: 60_000_000_000,
                            burst: 30_000,
                        },
                        Basis::FittedWindow,
                    ),
                    (
                        0,
                        Rate {
                            amount: 10,
                            period_ns: 1_000_000_000,
                            burst: 10,
                        },
                        Basis::StatedWindow,
                    ),
                ],
                adaptive: Some((9_500, 475, Step::Cut, 11_000)),
                cooldown_until: 0,
            },
            cooldown: Some(UNIX_EPOCH + Duration::from_millis(1_764_000_000_123)),
            written: UNIX_EPOCH + Duration::from_millis(1_764_000_000_000),
        };
        let bytes = encode(&d, &r);
        assert_eq!(decode(&d, &bytes).unwrap(), r);
        for bad in [
            &b"permitd-learned 2\n"[..],
            b"permitd-learned 1\nlimit requests 0 1000000000 1 stated\n",
            b"permitd-learned 1\nlimit requests 1 1 1 stated\n",
            b"permitd-learned 1\nlimit requests 1 1000000000 1 guessed\n",
            b"permitd-learned 1\nadaptive 0 1 cut 1\n",
            b"permitd-learned 1\nwhat\n",
            b"\xff",
        ] {
            assert!(decode(&d, bad).is_err(), "{bad:?}");
        }
    }

    /// A restore puts back fresh records of defined resources, and removes the records of
    /// unknown resources and those older than a day.
    #[test]
    fn restore_keeps_fresh_and_removes_stale() {
        let store = crate::store::MemoryStore::new();
        let registry = Registry::new(
            Arc::new(crate::clock::SystemClock::new()),
            None,
            crate::watch::Hub::new(),
        );
        let d = def();
        registry.put(d.clone());
        let record = |written: SystemTime| Record {
            definition: definition_sum(&d),
            state: LearnedState {
                limits: Vec::new(),
                adaptive: None,
                cooldown_until: 0,
            },
            cooldown: Some(SystemTime::now() + Duration::from_secs(60)),
            written,
        };
        let put = |resource: &str, r: &Record| {
            let key = keys::learned_key(DEFAULT_TENANT, resource, "").unwrap();
            store
                .update(RecordTree::Learned, &key, &mut |_| {
                    Write::Put(encode(&d, r))
                })
                .unwrap();
        };
        put("r", &record(SystemTime::now()));
        put("gone", &record(SystemTime::now()));
        put("r2", &record(SystemTime::now()));
        let mut old = d.clone();
        old.name = "old".into();
        registry.put(old);
        put(
            "old",
            &record(SystemTime::now() - KEEP_FOR - Duration::from_secs(1)),
        );
        assert_eq!(restore(&registry, &store).unwrap(), 1);
        assert!(registry.quota("r", "").unwrap().cooldown_until.is_some());
        assert!(registry.quota("old", "").unwrap().cooldown_until.is_none());
        let left: Vec<_> = store
            .scan(RecordTree::Learned, None, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(
            left,
            vec![keys::learned_key(DEFAULT_TENANT, "r", "").unwrap()]
        );
    }
}
