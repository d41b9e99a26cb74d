//! The `[limits]` section: caps on what clients can make the server hold, with per-tenant
//! overrides (`[limits.tenants.team-a]`).

use std::collections::HashMap;

use serde::Deserialize;

use super::ConfigError;
use super::resources::parse_duration;
use crate::permits::caps::{Caps, TenantCaps};

/// The `[limits]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    max_resources_per_tenant: Option<i64>,
    max_partitions_per_resource: Option<i64>,
    max_watch_streams_per_tenant: Option<i64>,
    max_waiters: Option<i64>,
    max_waiters_per_tenant: Option<i64>,
    max_idempotency_records_per_tenant: Option<i64>,
    max_idempotency_bytes_per_tenant: Option<i64>,
    min_watch_interval: Option<String>,
    max_connections: Option<i64>,
    header_timeout: Option<String>,
    request_timeout: Option<String>,
    max_in_flight: Option<i64>,
    #[serde(default)]
    tenants: HashMap<String, RawTenantLimits>,
}

/// A `[limits.tenants.NAME]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantLimits {
    max_resources: Option<i64>,
    max_partitions_per_resource: Option<i64>,
    max_watch_streams: Option<i64>,
    max_waiters: Option<i64>,
    max_idempotency_records: Option<i64>,
    max_idempotency_bytes: Option<i64>,
}

fn count(field: &str, v: Option<i64>) -> Result<Option<usize>, ConfigError> {
    v.map(|n| {
        usize::try_from(n)
            .ok()
            .filter(|&n| (1..=100_000_000).contains(&n))
            .ok_or_else(|| ConfigError::OutOfRange {
                field: field.to_owned(),
                value: n.to_string(),
                range: "1 to 100000000".to_owned(),
            })
    })
    .transpose()
}

/// A byte budget: 1 KiB to 1 TiB.
fn bytes(field: &str, v: Option<i64>) -> Result<Option<usize>, ConfigError> {
    v.map(|n| {
        usize::try_from(n)
            .ok()
            .filter(|&n| (1 << 10..=1 << 40).contains(&n))
            .ok_or_else(|| ConfigError::OutOfRange {
                field: field.to_owned(),
                value: n.to_string(),
                range: "1024 to 1099511627776".to_owned(),
            })
    })
    .transpose()
}

impl RawLimits {
    pub(crate) fn build(self) -> Result<Caps, ConfigError> {
        let d = Caps::default();
        let min_watch_interval = match self.min_watch_interval {
            Some(v) => parse_duration("limits.min_watch_interval", &v)?,
            None => d.min_watch_interval,
        };
        let mut tenants = HashMap::new();
        for (name, t) in self.tenants {
            let at = format!("limits.tenants.{name}");
            crate::auth::tenant::check_tenant(&name).map_err(|e| ConfigError::Conflict {
                field: at.clone(),
                reason: e.to_string(),
            })?;
            tenants.insert(
                name,
                TenantCaps {
                    resources: count(&format!("{at}.max_resources"), t.max_resources)?,
                    partitions_per_resource: count(
                        &format!("{at}.max_partitions_per_resource"),
                        t.max_partitions_per_resource,
                    )?,
                    watch_streams: count(&format!("{at}.max_watch_streams"), t.max_watch_streams)?,
                    waiters: count(&format!("{at}.max_waiters"), t.max_waiters)?,
                    idempotency_records: count(
                        &format!("{at}.max_idempotency_records"),
                        t.max_idempotency_records,
                    )?,
                    idempotency_bytes: bytes(
                        &format!("{at}.max_idempotency_bytes"),
                        t.max_idempotency_bytes,
                    )?,
                },
            );
        }
        Ok(Caps {
            resources_per_tenant: count(
                "limits.max_resources_per_tenant",
                self.max_resources_per_tenant,
            )?
            .unwrap_or(d.resources_per_tenant),
            partitions_per_resource: count(
                "limits.max_partitions_per_resource",
                self.max_partitions_per_resource,
            )?
            .unwrap_or(d.partitions_per_resource),
            watch_streams_per_tenant: count(
                "limits.max_watch_streams_per_tenant",
                self.max_watch_streams_per_tenant,
            )?
            .unwrap_or(d.watch_streams_per_tenant),
            waiters_per_tenant: count(
                "limits.max_waiters_per_tenant",
                self.max_waiters_per_tenant,
            )?
            .unwrap_or(d.waiters_per_tenant),
            waiters: count("limits.max_waiters", self.max_waiters)?.unwrap_or(d.waiters),
            idempotency_records_per_tenant: count(
                "limits.max_idempotency_records_per_tenant",
                self.max_idempotency_records_per_tenant,
            )?
            .unwrap_or(d.idempotency_records_per_tenant),
            idempotency_bytes_per_tenant: bytes(
                "limits.max_idempotency_bytes_per_tenant",
                self.max_idempotency_bytes_per_tenant,
            )?
            .unwrap_or(d.idempotency_bytes_per_tenant),
            min_watch_interval,
            max_connections: count("limits.max_connections", self.max_connections)?
                .unwrap_or(d.max_connections),
            header_timeout: match self.header_timeout {
                Some(v) => parse_duration("limits.header_timeout", &v)?,
                None => d.header_timeout,
            },
            request_timeout: match self.request_timeout {
                Some(v) => parse_duration("limits.request_timeout", &v)?,
                None => d.request_timeout,
            },
            max_in_flight: count("limits.max_in_flight", self.max_in_flight)?
                .unwrap_or(d.max_in_flight),
            tenants,
        })
    }
}
