//! What each tenant keeps in idempotency records (count and bytes), for the per-tenant caps.
//!
//! Counted in memory: recounted from the store at start, then moved by every write this
//! process makes and every record its sweeper removes, so a cap check costs a map read and
//! no store scan. With a store shared by replicas (Redis) the others' writes and sweeps are
//! not seen, so each full sweep pass replaces the counts with what it found; between passes
//! a replica's counts can be off by what the others did meanwhile (the cap bounds the
//! store, it is not an exact count).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use dashmap::DashMap;

/// One tenant's records and bytes (keys and payloads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Kept {
    pub(super) records: u64,
    pub(super) bytes: u64,
}

impl Kept {
    fn add(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes += bytes as u64;
    }
}

/// Per-tenant usage, and the totals of the sweep pass under way.
#[derive(Debug, Default)]
pub(super) struct Usage {
    per_tenant: DashMap<Box<str>, Kept>,
    pass: Mutex<HashMap<Box<str>, Kept>>,
}

impl Usage {
    /// What `tenant` keeps now.
    pub(super) fn of(&self, tenant: &str) -> Kept {
        self.per_tenant
            .get(tenant)
            .map_or_else(Kept::default, |k| *k)
    }

    /// A record of `tenant` went from `old` to `new` bytes (`None`: absent).
    pub(super) fn moved(&self, tenant: &str, old: Option<usize>, new: Option<usize>) {
        if old == new {
            return;
        }
        let mut k = match self.per_tenant.get_mut(tenant) {
            Some(k) => k,
            None => self.per_tenant.entry(tenant.into()).or_default(),
        };
        if let Some(o) = old {
            k.records = k.records.saturating_sub(1);
            k.bytes = k.bytes.saturating_sub(o as u64);
        }
        if let Some(n) = new {
            k.add(n);
        }
    }

    /// A record seen by the sweep pass under way.
    pub(super) fn seen(&self, tenant: &str, bytes: usize) {
        let mut pass = self.pass.lock().unwrap_or_else(PoisonError::into_inner);
        match pass.get_mut(tenant) {
            Some(k) => k.add(bytes),
            None => pass.entry(tenant.into()).or_default().add(bytes),
        }
    }

    /// The pass is over: its totals become the counts (tenants it did not see keep none).
    pub(super) fn pass_done(&self) {
        let pass = std::mem::take(&mut *self.pass.lock().unwrap_or_else(PoisonError::into_inner));
        self.per_tenant.retain(|t, _| pass.contains_key(t));
        for (t, k) in pass {
            self.per_tenant.insert(t, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes move the counts; a finished pass replaces them.
    #[test]
    fn moves_and_passes() {
        let u = Usage::default();
        u.moved("a", None, Some(10));
        u.moved("a", None, Some(5));
        u.moved("a", Some(5), Some(50));
        assert_eq!(
            u.of("a"),
            Kept {
                records: 2,
                bytes: 60
            }
        );
        u.moved("a", Some(10), None);
        assert_eq!(
            u.of("a"),
            Kept {
                records: 1,
                bytes: 50
            }
        );
        u.seen("b", 7);
        u.pass_done();
        assert_eq!(u.of("a"), Kept::default());
        assert_eq!(
            u.of("b"),
            Kept {
                records: 1,
                bytes: 7
            }
        );
    }
}
