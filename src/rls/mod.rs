//! Envoy's global rate limit service (RLS v3, `ShouldRateLimit`) over permitd's own
//! buckets, configured with envoyproxy/ratelimit's YAML ([`config`]).
//!
//! Each configured limit is a permitd resource (`rls:DOMAIN:PATH`, one requests limit of
//! `requests_per_unit` per unit, burst = `requests_per_unit`); a rule whose path matches
//! any value (a value-less key, a `prefix*` value) is partitioned, one bucket per value, as
//! envoyproxy/ratelimit keeps one counter per value. A rule naming `permitd_resource`
//! draws on that resource instead, so a gateway's hits and the workers' permits share one
//! bucket. Matching follows envoyproxy/ratelimit's `GetLimit`: entry by entry, exact
//! `key`+`value` first, then a `value: prefix*`, then a value-less `key`; a limit applies
//! only at the level of the descriptor's last entry.
//!
//! This module holds the configuration and the matching (pure); the server's handler asks
//! the engine (embedded or cluster) for the hits.

pub mod config;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::permits::resource::{MAX_NAME_LEN, check_name};
pub use config::{Limit, RlsConfig, RlsConfigError, Rule, Unit};

/// Most descriptors in one request.
pub const MAX_DESCRIPTORS: usize = 64;
/// Most entries in one descriptor.
pub const MAX_ENTRIES: usize = 16;
/// Longest domain, key or value, in bytes.
pub const MAX_TEXT: usize = 1024;

/// Which rate-limit headers `ShouldRateLimit` asks Envoy to add to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Headers {
    /// None.
    #[default]
    None,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` of the most restrictive descriptor.
    XRateLimit,
    /// IETF `RateLimit-Policy` and `RateLimit`.
    Ietf,
    /// Both.
    Both,
}

impl Headers {
    /// From the config (`none`, `x-ratelimit`, `ietf`, `both`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "x-ratelimit" => Self::XRateLimit,
            "ietf" => Self::Ietf,
            "both" => Self::Both,
            _ => return None,
        })
    }
}

/// The RLS settings and rules in force.
#[derive(Debug, Clone, Default)]
pub struct Rls {
    /// The rules.
    pub config: Arc<RlsConfig>,
    /// The tenant whose namespace the rules' resources live in.
    pub tenant: String,
    /// Response headers to add.
    pub headers: Headers,
    /// Per-value counts of the rules marked `detailed_metric`.
    pub detail: Arc<Detail>,
}

/// Distinct values counted per `detailed_metric` rule; later ones count as `_other`, so a
/// client sending endless values cannot grow the metrics without bound.
pub const MAX_DETAILED_VALUES: usize = 100;

/// Hits per (resource, value, over limit) of the rules marked `detailed_metric`
/// (envoyproxy/ratelimit's per-value stats, bounded).
#[derive(Debug, Default)]
pub struct Detail {
    counts: dashmap::DashMap<(String, String, bool), u64>,
    values: dashmap::DashMap<String, usize>,
}

impl Detail {
    /// One answer for `value` of the rule drawing on `resource` (qualified).
    pub fn record(&self, resource: &str, value: &str, over: bool) {
        let key = (resource.to_owned(), value.to_owned(), over);
        if let Some(mut n) = self.counts.get_mut(&key) {
            *n += 1;
            return;
        }
        let known = self
            .counts
            .contains_key(&(resource.to_owned(), value.to_owned(), !over));
        let key = if known {
            key
        } else {
            let mut seen = self.values.entry(resource.to_owned()).or_insert(0);
            if *seen < MAX_DETAILED_VALUES {
                *seen += 1;
                key
            } else {
                (resource.to_owned(), "_other".to_owned(), over)
            }
        };
        *self.counts.entry(key).or_insert(0) += 1;
    }

    /// Every count: (resource, value, over limit, hits), sorted.
    #[must_use]
    pub fn counts(&self) -> Vec<(String, String, bool, u64)> {
        let mut v: Vec<_> = self
            .counts
            .iter()
            .map(|e| (e.key().0.clone(), e.key().1.clone(), e.key().2, *e.value()))
            .collect();
        v.sort();
        v
    }
}

/// What one descriptor of a request matched (borrowing from the rules: a request makes
/// no copy of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'a> {
    /// The resource its hits draw on (unqualified); `None`: matched, unlimited.
    pub resource: Option<Cow<'a, str>>,
    /// The bucket within it ("" = the resource-wide one).
    pub partition: String,
    /// The limit shown back (`current_limit`); for a `permitd_resource` rule without its
    /// own `rate_limit`, filled from the resource by the caller.
    pub limit: Option<Cow<'a, Limit>>,
    /// Counted, never OVER_LIMIT.
    pub shadow_mode: bool,
    /// The rule's path, for metrics.
    pub path: &'a str,
    /// Metrics per value.
    pub detailed_metric: bool,
}

impl Rls {
    /// The rule a descriptor's entries match in `domain` (envoyproxy/ratelimit's
    /// `GetLimit`), as a [`Matched`]; `None` when no limit applies. `override_limit` is the
    /// descriptor's own `limit` (it replaces the configured one; the domain must exist).
    #[must_use]
    pub fn lookup(
        &self,
        domain: &str,
        entries: &[(&str, &str)],
        override_limit: Option<(u32, Unit)>,
    ) -> Option<Matched<'_>> {
        let top = self.config.domains.get(domain)?;
        if let Some((rpu, unit)) = override_limit {
            let limit = Limit {
                requests_per_unit: rpu,
                unit,
                multiplier: 1,
                name: String::new(),
                replaces: Vec::new(),
            };
            return Some(Matched {
                resource: Some(Cow::Owned(override_name(domain, rpu, unit))),
                partition: partition_of(entries.iter().copied()),
                limit: Some(Cow::Owned(limit)),
                shadow_mode: false,
                path: "override",
                detailed_metric: false,
            });
        }
        let mut level = top;
        let mut varying = Vec::new();
        for (i, (key, value)) in entries.iter().enumerate() {
            let rule = level.find(key, value)?;
            if rule.per_value
                && (rule.value.is_none() || rule.value.as_deref().is_some_and(|v| v.contains('*')))
            {
                varying.push((*key, *value));
            }
            if i + 1 == entries.len() {
                if rule.limit.is_none() && !rule.unlimited && rule.permitd_resource.is_none() {
                    return None;
                }
                let resource = (!rule.unlimited).then_some(Cow::Borrowed(rule.resource.as_str()));
                return Some(Matched {
                    resource,
                    partition: if rule.per_value || rule.permitd_resource.is_some() {
                        partition_of(varying.iter().copied())
                    } else {
                        String::new()
                    },
                    limit: rule.limit.as_ref().map(Cow::Borrowed),
                    shadow_mode: rule.shadow_mode,
                    path: &rule.path,
                    detailed_metric: rule.detailed_metric,
                });
            }
            level = &rule.children;
        }
        None
    }

    /// The definitions of every configured limit (names unqualified), to register at start.
    #[must_use]
    pub fn definitions(&self) -> Vec<crate::proto::Resource> {
        let mut out: Vec<_> = self
            .config
            .rules()
            .filter(|(_, r)| r.permitd_resource.is_none() && !r.unlimited)
            .filter_map(|(_, r)| {
                let l = r.limit.as_ref()?;
                Some(definition(&r.resource, l, r.per_value))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// A resource of one limit: `requests_per_unit` per window, burst the same, partitioned when
/// the rule matches any value. A limit of 0 is kept as 1 per window (a burst of 0 is not a
/// bucket); the handler answers every hit on it OVER_LIMIT without taking.
#[must_use]
pub fn definition(name: &str, l: &Limit, per_value: bool) -> crate::proto::Resource {
    let amount = u64::from(l.requests_per_unit.max(1));
    let period = l.period();
    crate::proto::Resource {
        name: name.to_owned(),
        limits: vec![crate::proto::Limit {
            dimension: "requests".into(),
            amount,
            period: Some(prost_types::Duration {
                seconds: i64::try_from(period.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            burst: amount,
            scope: 0,
        }],
        per_partition: per_value,
        limits_known: Some(true),
        ..Default::default()
    }
}

/// `rls:DOMAIN:PATH` within the name alphabet and length; anything outside it (or too long)
/// is replaced and a hash of the original appended, so distinct rules never share a name.
#[must_use]
pub fn resource_name(domain: &str, path: &str) -> String {
    fit(&format!("rls:{domain}:{path}"), MAX_NAME_LEN)
}

fn override_name(domain: &str, rpu: u32, unit: Unit) -> String {
    fit(
        &format!("rls:{domain}:override:{rpu}/{}", unit.duration().as_secs()),
        MAX_NAME_LEN,
    )
}

/// The partition of the values a bucket is kept per, `key:value/key:value`, made to fit.
fn partition_of<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut joined = String::new();
    for (k, v) in entries {
        if !joined.is_empty() {
            joined.push('/');
        }
        joined.push_str(k);
        joined.push(':');
        joined.push_str(v);
    }
    if joined.is_empty() || check_name(&joined, false, MAX_NAME_LEN).is_ok() {
        return joined;
    }
    fit(&joined, MAX_NAME_LEN)
}

/// `s` if it is a valid name of at most `max` bytes; else its valid characters (others as
/// `_`), cut, then `@` and 16 hex digits of its SHA-256.
fn fit(s: &str, max: usize) -> String {
    if s.is_empty() || check_name(s, false, max).is_ok() {
        return s.to_owned();
    }
    let hash = crate::auth::token::hex(&crate::auth::token::sha256(s.as_bytes()));
    let mut clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(max - 17);
    format!("{clean}@{}", &hash[..16])
}

/// The remaining hits shown for a limit (`limit_remaining`), and how long until the bucket
/// is full again (`duration_until_reset`: a token bucket refills smoothly, so "reset" is
/// when the whole `requests_per_unit` is available again).
#[must_use]
pub fn until_full(remaining: u64, rate: &crate::permits::limit::Rate) -> Duration {
    let missing = rate.burst.saturating_sub(remaining);
    if missing == 0 || rate.amount == 0 {
        return Duration::ZERO;
    }
    let ns = u128::from(missing) * u128::from(rate.period_ns);
    let ns = ns.div_ceil(u128::from(rate.amount));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// A `(key, value)` list of a request's entries.
#[must_use]
pub fn entries(
    d: &crate::proto::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor,
) -> Vec<(&str, &str)> {
    d.entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rls(yaml: &str) -> Rls {
        Rls {
            config: Arc::new(RlsConfig::from_texts([(Path::new("t.yaml"), yaml)]).unwrap()),
            tenant: "default".into(),
            headers: Headers::None,
            detail: Arc::default(),
        }
    }

    /// GetLimit's rules: exact before value-less, the limit only at the last entry,
    /// nested keys, per-value partitions, unknown domains.
    #[test]
    fn lookup_follows_get_limit() {
        let r = rls(
            "domain: d\ndescriptors:\n  - key: k\n    value: v\n    rate_limit: {unit: second, requests_per_unit: 1}\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 2}\n  - key: a\n    descriptors:\n      - key: b\n        rate_limit: {unit: hour, requests_per_unit: 3}\n",
        );
        let m = r.lookup("d", &[("k", "v")], None).unwrap();
        assert_eq!(
            (m.resource.as_deref(), m.partition.as_str()),
            (Some("rls:d:k:v"), "")
        );
        let m = r.lookup("d", &[("k", "x")], None).unwrap();
        assert_eq!(
            (m.resource.as_deref(), m.partition.as_str()),
            (Some("rls:d:k"), "k:x")
        );
        assert!(
            r.lookup("d", &[("a", "1")], None).is_none(),
            "no limit at a"
        );
        let m = r.lookup("d", &[("a", "1"), ("b", "2")], None).unwrap();
        assert_eq!(m.partition, "a:1/b:2");
        assert!(
            r.lookup("d", &[("a", "1"), ("b", "2"), ("c", "3")], None)
                .is_none()
        );
        assert!(r.lookup("nope", &[("k", "v")], None).is_none());
        assert!(
            r.lookup("d", &[("k", "v")], Some((9, Unit::Hour)))
                .is_some()
        );
    }

    /// `*` matches any run, anywhere, several times.
    #[test]
    fn globs() {
        use config::glob;
        for (p, v, want) in [
            ("foo*", "foobar", true),
            ("foo*", "fo", false),
            ("bar*b", "barb", true),
            ("bar*b", "bar123b", true),
            ("bar*b", "bar123", false),
            ("foo*bar*baz", "foo1bar2baz", true),
            ("foo*bar*baz", "foobarbaz", true),
            ("foo*bar*baz", "foobaz", false),
            ("*", "", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob(p, v), want, "{p} {v}");
        }
    }

    /// Per-value counts stop growing at the cap; later values count as `_other`.
    #[test]
    fn detail_is_bounded() {
        let d = Detail::default();
        for i in 0..MAX_DETAILED_VALUES + 50 {
            d.record("r", &format!("v{i}"), false);
        }
        d.record("r", "v0", true);
        let c = d.counts();
        assert_eq!(
            c.len(),
            MAX_DETAILED_VALUES + 2,
            "100 values, _other, and v0 over"
        );
        assert!(c.contains(&("r".into(), "_other".into(), false, 50)));
    }

    /// Names outside the alphabet are made to fit, distinctly.
    #[test]
    fn names_fit() {
        let a = resource_name("d", "path:/a b");
        let b = resource_name("d", "path:/a?b");
        assert_ne!(a, b);
        assert!(check_name(&a, true, MAX_NAME_LEN).is_ok(), "{a}");
        let long = resource_name("d", &"x".repeat(500));
        assert!(long.len() <= MAX_NAME_LEN);
    }
}
