//! The TOML form of a [`Resource`], both ways: raw tables -> proto (for the config file and
//! the CLI's `resources put`) and proto -> TOML (for `resources list --toml`).
//!
//! Only shape is checked here: types, durations (humantime strings) and enum names, each
//! error naming the field's path. Whether the limits make sense is the server's call, made
//! in one place for the file and the API alike.

use super::{ConfigError, RawFile, parse_toml};
use crate::proto::{BackoffKind, BackoffPolicy, FailurePolicy, Limit, LimitScope, Resource};
use serde::Deserialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Where parsed resource snippets come from, for error messages.
const SNIPPET: &str = "resources TOML";

/// Accepted `scope` names.
const SCOPES: &str = "resource, partition";
/// Accepted backoff `kind` names.
const KINDS: &str = "exponential, full_jitter, equal_jitter, decorrelated_jitter";

/// A `[[resources]]` (or `[default_resource]`) table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    name: Option<String>,
    /// The tenant the resource belongs to (server config only); absent: `default`.
    tenant: Option<String>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    concurrency: Option<u32>,
    lease: Option<String>,
    per_partition: Option<bool>,
    backoff: Option<RawBackoff>,
    max_queue: Option<u32>,
    learn_from_headers: Option<bool>,
    failure_policy: Option<String>,
    #[serde(default)]
    dimensions: Vec<String>,
    limits_known: Option<bool>,
    probe_concurrency: Option<u32>,
    accept_feedback_without_permit: Option<bool>,
}

/// A `[[resources.limits]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    dimension: String,
    amount: u64,
    period: Option<String>,
    burst: Option<u64>,
    scope: Option<String>,
}

/// A `[resources.backoff]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    kind: Option<String>,
    base: Option<String>,
    max: Option<String>,
    multiplier: Option<f64>,
    max_attempts: Option<u32>,
    max_retry_after: Option<String>,
}

impl RawResource {
    /// A declared resource: `name` is required. `at` is the table's path
    /// (`resources[2]`, or empty for a top-level snippet).
    pub(crate) fn into_proto(mut self, at: &str) -> Result<Resource, ConfigError> {
        if self.tenant.is_some() {
            return Err(ConfigError::Conflict {
                field: join(at, "tenant"),
                reason: "only the server's config file names tenants; a client acts for its \
                         token's"
                    .to_owned(),
            });
        }
        let name = self.name.take().ok_or_else(|| ConfigError::Missing {
            field: join(at, "name"),
        })?;
        let mut r = self.into_template(at)?;
        r.name = name;
        Ok(r)
    }

    /// A resource of the server's config file: as [`Self::into_proto`], its name qualified
    /// with its `tenant` (see [`crate::auth::tenant`]).
    pub(crate) fn into_server_proto(mut self, at: &str) -> Result<Resource, ConfigError> {
        let tenant = self.tenant.take();
        let mut r = self.into_proto(at)?;
        if let Some(t) = tenant {
            crate::auth::tenant::check_tenant(&t).map_err(|e| ConfigError::Conflict {
                field: join(at, "tenant"),
                reason: e.to_string(),
            })?;
            crate::permits::resource::check_name(
                &r.name,
                true,
                crate::permits::resource::MAX_NAME_LEN,
            )
            .map_err(|e| ConfigError::Conflict {
                field: join(at, "name"),
                reason: e.to_string(),
            })?;
            r.name = crate::auth::tenant::qualify(&t, &r.name).into_owned();
        }
        Ok(r)
    }

    /// A template (`[default_resource]`): any name is ignored and left empty.
    pub(crate) fn into_template(self, at: &str) -> Result<Resource, ConfigError> {
        if self.tenant.is_some() {
            return Err(ConfigError::Conflict {
                field: join(at, "tenant"),
                reason: "a template serves every tenant: it names none".to_owned(),
            });
        }
        let limits = self
            .limits
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.into_proto(&join(at, &format!("limits[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let backoff = self
            .backoff
            .map(|b| b.into_proto(&join(at, "backoff")))
            .transpose()?;
        Ok(Resource {
            name: String::new(),
            limits,
            concurrency: self.concurrency.unwrap_or(0),
            lease: opt_duration(&join(at, "lease"), self.lease.as_deref())?,
            per_partition: self.per_partition.unwrap_or(false),
            backoff,
            max_queue: self.max_queue.unwrap_or(0),
            learn_from_headers: self.learn_from_headers,
            dimensions: self.dimensions,
            limits_known: self.limits_known,
            probe_concurrency: self.probe_concurrency,
            accept_feedback_without_permit: self.accept_feedback_without_permit,
            failure_policy: match self.failure_policy.as_deref() {
                None => FailurePolicy::Unspecified,
                Some("fail_closed") => FailurePolicy::FailClosed,
                Some("local_fallback") => FailurePolicy::LocalFallback,
                Some(v) => {
                    return Err(ConfigError::InvalidEnum {
                        field: join(at, "failure_policy"),
                        value: v.to_owned(),
                        expected: "fail_closed, local_fallback",
                    });
                }
            } as i32,
        })
    }
}

impl RawLimit {
    /// The proto limit; `at` is the table's path.
    fn into_proto(self, at: &str) -> Result<Limit, ConfigError> {
        let scope = match self.scope.as_deref() {
            None => LimitScope::Unspecified,
            Some("resource") => LimitScope::Resource,
            Some("partition") => LimitScope::Partition,
            Some(other) => {
                return Err(ConfigError::InvalidEnum {
                    field: join(at, "scope"),
                    value: other.to_owned(),
                    expected: SCOPES,
                });
            }
        };
        Ok(Limit {
            dimension: self.dimension,
            amount: self.amount,
            period: opt_duration(&join(at, "period"), self.period.as_deref())?,
            burst: self.burst.unwrap_or(0),
            scope: scope as i32,
        })
    }
}

impl RawBackoff {
    /// The proto policy; `at` is the table's path.
    fn into_proto(self, at: &str) -> Result<BackoffPolicy, ConfigError> {
        let kind = match self.kind.as_deref() {
            None => BackoffKind::Unspecified,
            Some("exponential") => BackoffKind::Exponential,
            Some("full_jitter") => BackoffKind::FullJitter,
            Some("equal_jitter") => BackoffKind::EqualJitter,
            Some("decorrelated_jitter") => BackoffKind::DecorrelatedJitter,
            Some(other) => {
                return Err(ConfigError::InvalidEnum {
                    field: join(at, "kind"),
                    value: other.to_owned(),
                    expected: KINDS,
                });
            }
        };
        Ok(BackoffPolicy {
            kind: kind as i32,
            base: opt_duration(&join(at, "base"), self.base.as_deref())?,
            max: opt_duration(&join(at, "max"), self.max.as_deref())?,
            multiplier: self.multiplier.unwrap_or(0.0),
            max_attempts: self.max_attempts.unwrap_or(0),
            max_retry_after: opt_duration(
                &join(at, "max_retry_after"),
                self.max_retry_after.as_deref(),
            )?,
        })
    }
}

/// `prefix.field`, or just `field` at top level.
fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Parse a humantime duration (`60s`, `1m`, `500ms`, `1h 30m`), naming `field` in the error.
pub(crate) fn parse_duration(field: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|source| ConfigError::InvalidDuration {
        field: field.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// An optional humantime duration as a protobuf `Duration` (absent stays `None`).
fn opt_duration(
    field: &str,
    value: Option<&str>,
) -> Result<Option<prost_types::Duration>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let d = parse_duration(field, value)?;
    prost_types::Duration::try_from(d)
        .map(Some)
        .map_err(|_| ConfigError::DurationTooLarge {
            field: field.to_owned(),
            value: value.to_owned(),
        })
}

/// Parse a TOML snippet holding resources, for the CLI's `resources put`: accepts either a
/// document with `[[resources]]` tables (a whole config file works; its other sections are
/// ignored) or a single resource table at top level (with `name = ...`).
///
/// # Errors
/// The text does not parse, a field has the wrong type, duration or enum value (named by its
/// path: `resources[1].limits[0].period`, or `limits[0].period` for a top-level resource),
/// or the text holds no resource.
pub fn parse_resources_toml(text: &str) -> Result<Vec<Resource>, ConfigError> {
    let table: toml::Table = parse_toml(text, SNIPPET)?;
    let is_document = ["resources", "server", "default_resource"]
        .iter()
        .any(|k| table.contains_key(*k));
    if is_document {
        let raw: RawFile = parse_toml(text, SNIPPET)?;
        if raw.resources.is_empty() {
            return Err(ConfigError::NoResources);
        }
        raw.resources
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.into_proto(&format!("resources[{i}]")))
            .collect()
    } else if table.contains_key("name") {
        let raw: RawResource = parse_toml(text, SNIPPET)?;
        Ok(vec![raw.into_proto("")?])
    } else {
        Err(ConfigError::NoResources)
    }
}

/// Render a proto Resource back into the TOML form (one `[[resources]]` table) for
/// `resources list --toml`. Zero, empty and absent fields are left out (they read back as
/// the same defaults), so the output round-trips through [`parse_resources_toml`].
#[must_use]
pub fn resource_to_toml(r: &Resource) -> String {
    let mut out = String::from("[[resources]]\n");
    line(&mut out, "name", &toml_str(&r.name));
    if r.concurrency != 0 {
        line(&mut out, "concurrency", &r.concurrency.to_string());
    }
    duration_line(&mut out, "lease", r.lease.as_ref());
    if r.per_partition {
        line(&mut out, "per_partition", "true");
    }
    if r.max_queue != 0 {
        line(&mut out, "max_queue", &r.max_queue.to_string());
    }
    match FailurePolicy::try_from(r.failure_policy) {
        Ok(FailurePolicy::FailClosed) => line(&mut out, "failure_policy", "\"fail_closed\""),
        Ok(FailurePolicy::LocalFallback) => {
            line(&mut out, "failure_policy", "\"local_fallback\"");
        }
        _ => {}
    }
    if let Some(known) = r.limits_known {
        line(&mut out, "limits_known", &known.to_string());
    }
    if let Some(n) = r.probe_concurrency {
        line(&mut out, "probe_concurrency", &n.to_string());
    }
    if let Some(a) = r.accept_feedback_without_permit {
        line(&mut out, "accept_feedback_without_permit", &a.to_string());
    }
    if let Some(learn) = r.learn_from_headers {
        line(&mut out, "learn_from_headers", &learn.to_string());
    }
    if !r.dimensions.is_empty() {
        let dims: Vec<String> = r.dimensions.iter().map(|d| toml_str(d)).collect();
        line(&mut out, "dimensions", &format!("[{}]", dims.join(", ")));
    }
    for l in &r.limits {
        out.push_str("\n[[resources.limits]]\n");
        line(&mut out, "dimension", &toml_str(&l.dimension));
        line(&mut out, "amount", &l.amount.to_string());
        duration_line(&mut out, "period", l.period.as_ref());
        if l.burst != 0 {
            line(&mut out, "burst", &l.burst.to_string());
        }
        match LimitScope::try_from(l.scope) {
            Ok(LimitScope::Unspecified) => {}
            Ok(LimitScope::Resource) => line(&mut out, "scope", "\"resource\""),
            Ok(LimitScope::Partition) => line(&mut out, "scope", "\"partition\""),
            Err(_) => line(&mut out, "# scope", &format!("unknown value {}", l.scope)),
        }
    }
    if let Some(b) = &r.backoff {
        out.push_str("\n[resources.backoff]\n");
        match BackoffKind::try_from(b.kind) {
            Ok(BackoffKind::Unspecified) => {}
            Ok(BackoffKind::Exponential) => line(&mut out, "kind", "\"exponential\""),
            Ok(BackoffKind::FullJitter) => line(&mut out, "kind", "\"full_jitter\""),
            Ok(BackoffKind::EqualJitter) => line(&mut out, "kind", "\"equal_jitter\""),
            Ok(BackoffKind::DecorrelatedJitter) => {
                line(&mut out, "kind", "\"decorrelated_jitter\"");
            }
            Err(_) => line(&mut out, "# kind", &format!("unknown value {}", b.kind)),
        }
        duration_line(&mut out, "base", b.base.as_ref());
        duration_line(&mut out, "max", b.max.as_ref());
        if b.multiplier != 0.0 {
            line(
                &mut out,
                "multiplier",
                &toml::Value::Float(b.multiplier).to_string(),
            );
        }
        if b.max_attempts != 0 {
            line(&mut out, "max_attempts", &b.max_attempts.to_string());
        }
        duration_line(&mut out, "max_retry_after", b.max_retry_after.as_ref());
    }
    out
}

/// Append `key = value`.
fn line(out: &mut String, key: &str, value: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key} = {value}");
}

/// Append `key = "<humantime>"` for a present duration. A negative one (which the server
/// never stores) has no humantime form and is written as a comment.
fn duration_line(out: &mut String, key: &str, d: Option<&prost_types::Duration>) {
    let Some(d) = d else { return };
    match Duration::try_from(*d) {
        Ok(std) => line(
            out,
            key,
            &toml_str(&humantime::format_duration(std).to_string()),
        ),
        Err(_) => line(
            out,
            &format!("# {key}"),
            &format!("negative duration {}s {}ns", d.seconds, d.nanos),
        ),
    }
}

/// A TOML basic string, quoted and escaped.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource that sets every field.
    fn full() -> Resource {
        Resource {
            name: "openai:gpt-4o".to_owned(),
            limits: vec![
                Limit {
                    dimension: "requests".to_owned(),
                    amount: 500,
                    period: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    burst: 20,
                    scope: LimitScope::Partition as i32,
                },
                Limit {
                    dimension: "tokens".to_owned(),
                    amount: 30_000,
                    period: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 500_000_000,
                    }),
                    burst: 0,
                    scope: LimitScope::Unspecified as i32,
                },
            ],
            concurrency: 50,
            lease: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            per_partition: true,
            backoff: Some(BackoffPolicy {
                kind: BackoffKind::DecorrelatedJitter as i32,
                base: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 250_000_000,
                }),
                max: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                multiplier: 1.5,
                max_attempts: 4,
                max_retry_after: Some(prost_types::Duration {
                    seconds: 900,
                    nanos: 0,
                }),
            }),
            max_queue: 1000,
            failure_policy: FailurePolicy::LocalFallback as i32,
            learn_from_headers: Some(false),
            limits_known: Some(true),
            probe_concurrency: Some(2),
            accept_feedback_without_permit: Some(true),
            dimensions: vec!["tokens".to_owned(), "weird \"dim\"".to_owned()],
        }
    }

    /// Both accepted forms parse: `[[resources]]` tables and one top-level resource.
    #[test]
    fn parse_resources_toml_both_forms() {
        let doc = "[[resources]]\nname = \"a\"\n[[resources.limits]]\ndimension = \"requests\"\namount = 5\nperiod = \"1s\"\n[[resources]]\nname = \"b\"\n";
        let rs = parse_resources_toml(doc).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!((rs[0].name.as_str(), rs[1].name.as_str()), ("a", "b"));
        assert_eq!(rs[0].limits[0].amount, 5);

        let single = "name = \"solo\"\nconcurrency = 3\n[[limits]]\ndimension = \"requests\"\namount = 1\nperiod = \"1h\"\n";
        let rs = parse_resources_toml(single).unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!((rs[0].name.as_str(), rs[0].concurrency), ("solo", 3));
        assert_eq!(rs[0].limits[0].period.unwrap().seconds, 3600);

        let e = parse_resources_toml(
            "name = \"x\"\n[[limits]]\ndimension = \"r\"\namount = 1\nperiod = \"1 fortnight\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("limits[0].period: "), "{e}");
        let e = parse_resources_toml("concurrency = 3\n").unwrap_err();
        assert!(matches!(e, ConfigError::NoResources), "{e:?}");
    }

    /// A rendered resource parses back to the same proto, every field included.
    #[test]
    fn resource_to_toml_round_trips() {
        for r in [
            full(),
            Resource {
                name: "bare".to_owned(),
                ..Resource::default()
            },
        ] {
            let text = resource_to_toml(&r);
            let back = parse_resources_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, vec![r], "{text}");
        }
        let two = format!(
            "{}\n{}",
            resource_to_toml(&full()),
            resource_to_toml(&full())
        );
        assert_eq!(parse_resources_toml(&two).unwrap().len(), 2);
    }
}
