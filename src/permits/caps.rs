//! Caps on what clients can make the server hold (`../shared/design/security.md`,
//! "Bounded by construction"): server-wide defaults with per-tenant overrides. A refusal is
//! [`super::PermitError::Exhausted`], RESOURCE_EXHAUSTED naming the cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;

/// One tenant's overrides; `None` keeps the server's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantCaps {
    /// Resources the tenant may have.
    pub resources: Option<usize>,
    /// Live partition buckets per resource.
    pub partitions_per_resource: Option<usize>,
    /// Watch streams open at once (dashboard feeds included).
    pub watch_streams: Option<usize>,
    /// Callers queued at once, over all the tenant's buckets.
    pub waiters: Option<usize>,
    /// Idempotency records kept (live or awaiting the sweeper).
    pub idempotency_records: Option<usize>,
    /// Idempotency key and record bytes kept.
    pub idempotency_bytes: Option<usize>,
}

/// The caps in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// Resources per tenant (defined or made from the template on first use).
    pub resources_per_tenant: usize,
    /// Live partition buckets per resource (idle ones are swept and stop counting).
    pub partitions_per_resource: usize,
    /// Watch streams per tenant.
    pub watch_streams_per_tenant: usize,
    /// Callers queued at once per tenant (each holds a task and a connection's stream).
    pub waiters_per_tenant: usize,
    /// Callers queued at once in all.
    pub waiters: usize,
    /// Idempotency records per tenant (each Begin of a new key makes one).
    pub idempotency_records_per_tenant: usize,
    /// Idempotency bytes (keys and records, results included) per tenant.
    pub idempotency_bytes_per_tenant: usize,
    /// Shortest `min_interval` a Watch may ask for (shorter asks are raised to it).
    pub min_watch_interval: Duration,
    /// Connections open at once, per listener (gRPC, HTTP): past it new clients wait in
    /// the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (HTTP/1) or its first bytes (gRPC)
    /// once connected; slower clients are disconnected.
    pub header_timeout: Duration,
    /// Longest a gRPC call may run before it is answered (CANCELLED past it); longer than
    /// the longest `max_wait`. Streams (Watch) are not cut: they are capped by count.
    pub request_timeout: Duration,
    /// gRPC calls in progress at once; past it new calls are refused at once
    /// (RESOURCE_EXHAUSTED) instead of queueing behind the ones being served.
    pub max_in_flight: usize,
    /// Per-tenant overrides.
    pub tenants: HashMap<String, TenantCaps>,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            resources_per_tenant: 10_000,
            partitions_per_resource: 100_000,
            watch_streams_per_tenant: 1_000,
            waiters_per_tenant: 10_000,
            waiters: 100_000,
            idempotency_records_per_tenant: 1_000_000,
            idempotency_bytes_per_tenant: 1 << 30,
            min_watch_interval: Duration::from_millis(10),
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(3600 + 5 * 60),
            max_in_flight: 200_000,
            tenants: HashMap::new(),
        }
    }
}

impl Caps {
    /// Resources `tenant` may have.
    #[must_use]
    pub fn resources(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|t| t.resources)
            .unwrap_or(self.resources_per_tenant)
    }

    /// Live partitions a resource of `tenant` may have.
    #[must_use]
    pub fn partitions(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|t| t.partitions_per_resource)
            .unwrap_or(self.partitions_per_resource)
    }

    /// Watch streams `tenant` may have open.
    #[must_use]
    pub fn watch_streams(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|t| t.watch_streams)
            .unwrap_or(self.watch_streams_per_tenant)
    }
}

impl Caps {
    /// Callers `tenant` may have queued.
    #[must_use]
    pub fn waiters_of(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|t| t.waiters)
            .unwrap_or(self.waiters_per_tenant)
    }

    /// Idempotency (records, bytes) `tenant` may keep.
    #[must_use]
    pub fn idempotency(&self, tenant: &str) -> (usize, usize) {
        let t = self.tenants.get(tenant);
        (
            t.and_then(|t| t.idempotency_records)
                .unwrap_or(self.idempotency_records_per_tenant),
            t.and_then(|t| t.idempotency_bytes)
                .unwrap_or(self.idempotency_bytes_per_tenant),
        )
    }
}

/// Live things (queued callers, open streams) counted per tenant and in all; each is held
/// by a [`Held`] that gives its place back when dropped, however its holder ends.
#[derive(Debug, Default)]
pub struct Counter {
    per_tenant: DashMap<Box<str>, usize>,
    total: AtomicUsize,
}

/// Which limit a [`Counter::take`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The tenant's own.
    Tenant,
    /// The server-wide one.
    Total,
}

/// One counted thing; dropping it gives the place back.
#[derive(Debug)]
pub struct Held {
    counter: Arc<Counter>,
    tenant: Box<str>,
}

impl Counter {
    /// A place for one more of `tenant`'s, within `tenant_limit` of its own and `total_limit`
    /// in all.
    ///
    /// # Errors
    /// [`Full`] naming the limit reached; nothing is counted then.
    pub fn take(
        self: &Arc<Self>,
        tenant: &str,
        tenant_limit: usize,
        total_limit: usize,
    ) -> Result<Held, Full> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= total_limit {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Total);
        }
        let mut n = match self.per_tenant.get_mut(tenant) {
            Some(n) => n,
            None => self.per_tenant.entry(tenant.into()).or_insert(0),
        };
        if *n >= tenant_limit {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Tenant);
        }
        *n += 1;
        Ok(Held {
            counter: Arc::clone(self),
            tenant: tenant.into(),
        })
    }

    /// How many `tenant` holds now.
    #[must_use]
    pub fn of(&self, tenant: &str) -> usize {
        self.per_tenant.get(tenant).map_or(0, |n| *n)
    }

    /// How many are held in all.
    #[must_use]
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut n) = self.counter.per_tenant.get_mut(&*self.tenant) {
            *n = n.saturating_sub(1);
        }
        self.counter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant's override wins; others get the server's value.
    #[test]
    fn overrides() {
        let mut c = Caps::default();
        c.tenants.insert(
            "big".into(),
            TenantCaps {
                partitions_per_resource: Some(5),
                ..TenantCaps::default()
            },
        );
        assert_eq!(c.partitions("big"), 5);
        assert_eq!(c.partitions("other"), 100_000);
        assert_eq!(c.resources("big"), 10_000);
    }

    /// Both limits hold, a refusal counts nothing, and dropping gives places back.
    #[test]
    fn counter_limits() {
        let c = Arc::new(Counter::default());
        let a: Vec<_> = (0..2).map(|_| c.take("a", 2, 3).unwrap()).collect();
        assert_eq!(c.take("a", 2, 3).unwrap_err(), Full::Tenant);
        let b = c.take("b", 2, 3).unwrap();
        assert_eq!(c.take("b", 2, 3).unwrap_err(), Full::Total);
        assert_eq!((c.of("a"), c.of("b"), c.total()), (2, 1, 3));
        drop(a);
        assert_eq!((c.of("a"), c.total()), (0, 1));
        drop(b);
        assert_eq!(c.total(), 0);
        assert!(c.take("a", 2, 3).is_ok());
    }
}
