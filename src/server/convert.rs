//! Protobuf <-> domain conversion, with every field validated once, here. Both PutResource
//! and the config file's resources pass through [`resource_from_proto`], so a definition
//! means the same thing whichever way it arrives, and errors name the proto field.

use std::time::{Duration, SystemTime};

use crate::permits::PermitError;
use crate::permits::limit::{MAX_AMOUNT, MAX_PERIOD_NS, MIN_PERIOD_NS, Rate};
use crate::permits::resource::{
    BackoffDef, BackoffKind, DEFAULT_LEASE, DEFAULT_MAX_QUEUE, FailurePolicy, LimitDef,
    MAX_DIMENSION_LEN, MAX_DIMENSIONS, MAX_LEASE, MAX_LIMITS, MAX_NAME_LEN, MAX_PROBE_CONCURRENCY,
    MIN_LEASE, Origin, REQUESTS, ResourceDef, Scope, check_name,
};
use crate::proto;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PermitError {
    PermitError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A proto duration -> std, refusing negative or malformed values.
pub fn duration(d: &prost_types::Duration, field: &str) -> Result<Duration, PermitError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(invalid(field, "must be a non-negative duration"));
    }
    let secs = u64::try_from(d.seconds).map_err(|_| invalid(field, "out of range"))?;
    let nanos = u32::try_from(d.nanos).map_err(|_| invalid(field, "out of range"))?;
    Ok(Duration::new(secs, nanos))
}

/// An optional proto duration, bounded.
pub fn opt_duration(
    d: Option<&prost_types::Duration>,
    field: &str,
    min: Duration,
    max: Duration,
) -> Result<Option<Duration>, PermitError> {
    let Some(d) = d else { return Ok(None) };
    let v = duration(d, field)?;
    if v < min || v > max {
        return Err(invalid(
            field,
            format!(
                "{} is out of range [{}, {}]",
                humantime::format_duration(v),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(Some(v))
}

/// std -> proto duration (saturating).
#[must_use]
pub fn to_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Wall time -> proto timestamp.
#[must_use]
pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Check a name field.
pub fn name(s: &str, field: &str, required: bool, max: usize) -> Result<(), PermitError> {
    check_name(s, required, max).map_err(|e| invalid(field, e.to_string()))
}

/// Validate a proto resource into a definition; `field` prefixes error names (`resource`
/// for the API, `resources[3]` for the config file).
pub fn resource_from_proto(r: &proto::Resource, field: &str) -> Result<ResourceDef, PermitError> {
    // Definitions arrive with their tenant already in the name (the edge qualified it, or
    // the store kept it): both parts are checked.
    crate::auth::tenant::check_qualified(&r.name, MAX_NAME_LEN)
        .map_err(|e| invalid(format!("{field}.name"), e.to_string()))?;
    let mut dimensions = vec![REQUESTS.to_owned()];
    let mut declared = Vec::new();
    for (i, d) in r.dimensions.iter().enumerate() {
        name(
            d,
            &format!("{field}.dimensions[{i}]"),
            true,
            MAX_DIMENSION_LEN,
        )?;
        if !dimensions.contains(d) {
            dimensions.push(d.clone());
        }
        if !declared.contains(d) {
            declared.push(d.clone());
        }
    }
    if r.limits.len() > MAX_LIMITS {
        return Err(invalid(
            format!("{field}.limits"),
            format!("{} limits, at most {MAX_LIMITS} allowed", r.limits.len()),
        ));
    }
    let mut limits = Vec::with_capacity(r.limits.len());
    for (i, l) in r.limits.iter().enumerate() {
        let f = format!("{field}.limits[{i}]");
        name(
            &l.dimension,
            &format!("{f}.dimension"),
            true,
            MAX_DIMENSION_LEN,
        )?;
        let dim = match dimensions.iter().position(|d| d == &l.dimension) {
            Some(i) => i,
            None => {
                dimensions.push(l.dimension.clone());
                dimensions.len() - 1
            }
        };
        if l.amount == 0 || l.amount > MAX_AMOUNT {
            return Err(invalid(
                format!("{f}.amount"),
                format!("{} is out of range [1, {MAX_AMOUNT}]", l.amount),
            ));
        }
        let period = l
            .period
            .as_ref()
            .ok_or_else(|| invalid(format!("{f}.period"), "is required"))?;
        let period = duration(period, &format!("{f}.period"))?;
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&period_ns) {
            return Err(invalid(
                format!("{f}.period"),
                format!(
                    "{} is out of range [1ms, 366days]",
                    humantime::format_duration(period)
                ),
            ));
        }
        let burst = if l.burst == 0 { l.amount } else { l.burst };
        if burst > MAX_AMOUNT {
            return Err(invalid(
                format!("{f}.burst"),
                format!("{burst} is out of range [0, {MAX_AMOUNT}]"),
            ));
        }
        let (scope, scope_explicit) = match proto::LimitScope::try_from(l.scope) {
            Ok(proto::LimitScope::Unspecified) => (
                if r.per_partition {
                    Scope::Partition
                } else {
                    Scope::Resource
                },
                false,
            ),
            Ok(proto::LimitScope::Resource) => (Scope::Resource, true),
            Ok(proto::LimitScope::Partition) if r.per_partition => (Scope::Partition, true),
            Ok(proto::LimitScope::Partition) => {
                return Err(invalid(
                    format!("{f}.scope"),
                    "LIMIT_SCOPE_PARTITION requires per_partition = true",
                ));
            }
            Err(_) => return Err(invalid(format!("{f}.scope"), "unknown scope")),
        };
        limits.push(LimitDef {
            dimension: dim,
            rate: Rate {
                amount: l.amount,
                period_ns,
                burst,
            },
            scope,
            scope_explicit,
            origin: Origin::Config,
        });
    }
    if dimensions.len() > MAX_DIMENSIONS {
        return Err(invalid(
            format!("{field}.dimensions"),
            format!("{} dimensions, at most {MAX_DIMENSIONS}", dimensions.len()),
        ));
    }
    let lease = opt_duration(
        r.lease.as_ref(),
        &format!("{field}.lease"),
        MIN_LEASE,
        MAX_LEASE,
    )?
    .unwrap_or(DEFAULT_LEASE);
    let backoff = backoff_from_proto(r.backoff.as_ref(), &format!("{field}.backoff"))?;
    Ok(ResourceDef {
        name: r.name.clone(),
        dimensions,
        declared_dimensions: declared,
        limits,
        concurrency: r.concurrency,
        lease,
        per_partition: r.per_partition,
        backoff,
        max_queue: if r.max_queue == 0 {
            DEFAULT_MAX_QUEUE
        } else {
            r.max_queue
        },
        learn_from_headers: r.learn_from_headers.unwrap_or(true),
        accept_feedback_without_permit: r.accept_feedback_without_permit.unwrap_or(false),
        limits_known: r.limits_known.unwrap_or(false),
        probe_concurrency: match r.probe_concurrency {
            Some(n) if n > MAX_PROBE_CONCURRENCY => {
                return Err(invalid(
                    format!("{field}.probe_concurrency"),
                    format!("{n}, at most {MAX_PROBE_CONCURRENCY} allowed (0 = off)"),
                ));
            }
            Some(n) => n,
            None if r.limits_known == Some(true) => 0,
            None => 1,
        },
        failure_policy: match proto::FailurePolicy::try_from(r.failure_policy) {
            Ok(proto::FailurePolicy::Unspecified) => None,
            Ok(proto::FailurePolicy::FailClosed) => Some(FailurePolicy::FailClosed),
            Ok(proto::FailurePolicy::LocalFallback) => Some(FailurePolicy::LocalFallback),
            Err(_) => {
                return Err(PermitError::Invalid {
                    field: format!("{field}.failure_policy"),
                    message: format!("unknown value {}", r.failure_policy),
                });
            }
        },
    })
}

fn backoff_from_proto(
    b: Option<&proto::BackoffPolicy>,
    field: &str,
) -> Result<BackoffDef, PermitError> {
    let d = BackoffDef::default();
    let Some(b) = b else { return Ok(d) };
    let day = Duration::from_secs(24 * 3600);
    let kind = match proto::BackoffKind::try_from(b.kind) {
        Ok(proto::BackoffKind::Unspecified | proto::BackoffKind::FullJitter) => {
            BackoffKind::FullJitter
        }
        Ok(proto::BackoffKind::Exponential) => BackoffKind::Exponential,
        Ok(proto::BackoffKind::EqualJitter) => BackoffKind::EqualJitter,
        Ok(proto::BackoffKind::DecorrelatedJitter) => BackoffKind::DecorrelatedJitter,
        Err(_) => return Err(invalid(format!("{field}.kind"), "unknown kind")),
    };
    let base = opt_duration(
        b.base.as_ref(),
        &format!("{field}.base"),
        Duration::ZERO,
        day,
    )?
    .unwrap_or(d.base);
    let max = opt_duration(b.max.as_ref(), &format!("{field}.max"), Duration::ZERO, day)?
        .unwrap_or(d.max);
    if max < base {
        return Err(invalid(format!("{field}.max"), "must not be below base"));
    }
    let multiplier = if b.multiplier == 0.0 {
        d.multiplier
    } else if b.multiplier.is_finite() && (1.0..=100.0).contains(&b.multiplier) {
        b.multiplier
    } else {
        return Err(invalid(
            format!("{field}.multiplier"),
            format!("{} is out of range [1, 100]", b.multiplier),
        ));
    };
    let max_retry_after = opt_duration(
        b.max_retry_after.as_ref(),
        &format!("{field}.max_retry_after"),
        Duration::ZERO,
        day,
    )?
    .unwrap_or(d.max_retry_after);
    Ok(BackoffDef {
        kind,
        base,
        max,
        multiplier,
        max_attempts: if b.max_attempts == 0 {
            d.max_attempts
        } else {
            b.max_attempts
        },
        max_retry_after,
    })
}

/// A definition back to the proto, defaults filled in (what ListResources shows). Learned
/// limits are not part of the definition.
#[must_use]
pub fn resource_to_proto(d: &ResourceDef) -> proto::Resource {
    let limits = d
        .limits
        .iter()
        .filter(|l| l.origin == Origin::Config)
        .map(|l| proto::Limit {
            dimension: d.dimensions[l.dimension].clone(),
            amount: l.rate.amount,
            period: Some(to_duration(Duration::from_nanos(l.rate.period_ns))),
            burst: l.rate.burst,
            scope: match (l.scope_explicit, l.scope) {
                (false, _) => proto::LimitScope::Unspecified,
                (true, Scope::Resource) => proto::LimitScope::Resource,
                (true, Scope::Partition) => proto::LimitScope::Partition,
            } as i32,
        })
        .collect();
    let b = &d.backoff;
    proto::Resource {
        name: d.name.clone(),
        limits,
        concurrency: d.concurrency,
        lease: Some(to_duration(d.lease)),
        per_partition: d.per_partition,
        backoff: Some(proto::BackoffPolicy {
            kind: match b.kind {
                BackoffKind::Exponential => proto::BackoffKind::Exponential,
                BackoffKind::FullJitter => proto::BackoffKind::FullJitter,
                BackoffKind::EqualJitter => proto::BackoffKind::EqualJitter,
                BackoffKind::DecorrelatedJitter => proto::BackoffKind::DecorrelatedJitter,
            } as i32,
            base: Some(to_duration(b.base)),
            max: Some(to_duration(b.max)),
            multiplier: b.multiplier,
            max_attempts: b.max_attempts,
            max_retry_after: Some(to_duration(b.max_retry_after)),
        }),
        max_queue: d.max_queue,
        learn_from_headers: Some(d.learn_from_headers),
        limits_known: Some(d.limits_known),
        probe_concurrency: Some(d.probe_concurrency),
        accept_feedback_without_permit: Some(d.accept_feedback_without_permit),
        dimensions: d.declared_dimensions.clone(),
        failure_policy: match d.failure_policy {
            None => proto::FailurePolicy::Unspecified,
            Some(FailurePolicy::FailClosed) => proto::FailurePolicy::FailClosed,
            Some(FailurePolicy::LocalFallback) => proto::FailurePolicy::LocalFallback,
        } as i32,
    }
}

/// A bucket view on the wire.
#[must_use]
pub fn quota_update(
    resource: &str,
    partition: &str,
    v: &crate::permits::QuotaView,
) -> proto::QuotaUpdate {
    proto::QuotaUpdate {
        resource: resource.to_owned(),
        partition: partition.to_owned(),
        dimensions: v
            .dimensions
            .iter()
            // An index read back from Redis after a redefinition dropped its dimension
            // names nothing now: skipped, never a panic.
            .filter_map(|d| Some((d, v.def.dimensions.get(d.dimension)?)))
            .map(|(d, name)| proto::DimensionQuota {
                dimension: name.clone(),
                limit: d.limit,
                remaining: d.remaining,
                reset_at: Some(to_timestamp(d.reset_at)),
                source: match d.source {
                    Origin::Config => proto::LimitSource::Config,
                    Origin::Learned => proto::LimitSource::Learned,
                    Origin::Adaptive => proto::LimitSource::Adaptive,
                } as i32,
                period: Some(to_duration(d.period)),
                reason: d.reason.clone(),
                rate_per_second: d.rate_per_second,
            })
            .collect(),
        in_flight: v.in_flight,
        concurrency: v.concurrency,
        queue_depth: v.queue_depth,
        cooldown_until: v.cooldown_until.map(to_timestamp),
        granted_total: v.granted_total,
        denied_total: v.denied_total,
        upstream_429_total: v.upstream_429_total,
        at: Some(to_timestamp(v.at)),
        probing: v.probing,
        cooldown_reason: v.cooldown_reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(dim: &str, amount: u64, secs: i64) -> proto::Limit {
        proto::Limit {
            dimension: dim.into(),
            amount,
            period: Some(prost_types::Duration {
                seconds: secs,
                nanos: 0,
            }),
            burst: 0,
            scope: 0,
        }
    }

    fn field_of(e: PermitError) -> String {
        match e {
            PermitError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// A definition round-trips through the proto with defaults filled in.
    #[test]
    fn round_trip() {
        let r = proto::Resource {
            name: "openai:gpt-4o".into(),
            limits: vec![limit("requests", 500, 60), limit("tokens", 30_000, 60)],
            concurrency: 10,
            dimensions: vec!["input_tokens".into()],
            ..Default::default()
        };
        let d = resource_from_proto(&r, "resource").unwrap();
        assert_eq!(d.dimensions, ["requests", "input_tokens", "tokens"]);
        assert_eq!(d.limits[1].rate.burst, 30_000);
        let back = resource_to_proto(&d);
        assert_eq!(resource_from_proto(&back, "resource").unwrap(), d);
    }

    /// Each bad field is named in the error.
    #[test]
    fn bad_fields_are_named() {
        let ok = proto::Resource {
            name: "r".into(),
            limits: vec![limit("requests", 5, 1)],
            ..Default::default()
        };
        type Mutation = Box<dyn Fn(&mut proto::Resource)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|r| r.name = String::new()), "resource.name"),
            (Box::new(|r| r.name = "a b".into()), "resource.name"),
            (
                Box::new(|r| r.limits[0].amount = 0),
                "resource.limits[0].amount",
            ),
            (
                Box::new(|r| r.limits[0].period = None),
                "resource.limits[0].period",
            ),
            (
                Box::new(|r| {
                    r.limits[0].period = Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    });
                }),
                "resource.limits[0].period",
            ),
            (
                Box::new(|r| {
                    r.limits[0].period = Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 1,
                    });
                }),
                "resource.limits[0].period",
            ),
            (
                Box::new(|r| r.limits[0].dimension = "x y".into()),
                "resource.limits[0].dimension",
            ),
            (
                Box::new(|r| r.limits[0].scope = 2),
                "resource.limits[0].scope",
            ),
            (
                Box::new(|r| r.limits[0].scope = 99),
                "resource.limits[0].scope",
            ),
            (
                Box::new(|r| {
                    r.lease = Some(prost_types::Duration {
                        seconds: 10_000_000,
                        nanos: 0,
                    });
                }),
                "resource.lease",
            ),
            (
                Box::new(|r| {
                    r.backoff = Some(proto::BackoffPolicy {
                        multiplier: f64::NAN,
                        ..Default::default()
                    });
                }),
                "resource.backoff.multiplier",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = ok.clone();
            mutate(&mut r);
            assert_eq!(
                field_of(resource_from_proto(&r, "resource").unwrap_err()),
                field
            );
        }
    }
}
