//! Caps on what clients can make the server hold (`../shared/design/security.md`,
//! "Bounded by construction"): server-wide defaults with per-tenant overrides. A refusal is
//! [`super::PermitError::Exhausted`], RESOURCE_EXHAUSTED naming the cap.

use std::collections::HashMap;
use std::time::Duration;

/// One tenant's overrides; `None` keeps the server's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantCaps {
    /// Resources the tenant may have.
    pub resources: Option<usize>,
    /// Live partition buckets per resource.
    pub partitions_per_resource: Option<usize>,
    /// Watch streams open at once (dashboard feeds included).
    pub watch_streams: Option<usize>,
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
    /// Shortest `min_interval` a Watch may ask for (shorter asks are raised to it).
    pub min_watch_interval: Duration,
    /// Connections open at once, per listener (gRPC, HTTP): past it new clients wait in
    /// the listen backlog.
    pub max_connections: usize,
    /// Per-tenant overrides.
    pub tenants: HashMap<String, TenantCaps>,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            resources_per_tenant: 10_000,
            partitions_per_resource: 100_000,
            watch_streams_per_tenant: 1_000,
            min_watch_interval: Duration::from_millis(10),
            max_connections: 10_000,
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
}
