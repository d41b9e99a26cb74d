//! envoyproxy/ratelimit's YAML configuration, accepted as it is: one `domain` per file with
//! nested `descriptors` (`key`, optional `value`, `rate_limit: {unit, requests_per_unit,
//! unit_multiplier, unlimited, name, replaces}`, `shadow_mode`, `detailed_metric`), from a
//! file or every `*.yaml`/`*.yml` of a directory. One addition: `permitd_resource: NAME`
//! on a descriptor makes its hits draw on that permitd resource, so a gateway and the
//! workers share one bucket.
//!
//! Loading is all or nothing: the first error names the file and the path in it
//! (`descriptors[1].descriptors[0].rate_limit.unit`), and nothing is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RlsConfigError {
    /// The file or directory could not be read.
    #[error("cannot read rls config {}", path.display())]
    Read {
        /// What was being read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse, or has a key the format does not know.
    #[error("rls config {}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message (with its line and column).
        message: String,
    },
    /// A value is wrong.
    #[error("rls config {}: {path}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Where in it, e.g. `descriptors[0].rate_limit.unit`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    domain: Option<String>,
    #[serde(default)]
    descriptors: Option<Vec<RawDescriptor>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    key: Option<String>,
    value: Option<String>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    descriptors: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    detailed_metric: bool,
    #[serde(default)]
    value_to_metric: bool,
    #[serde(default)]
    share_threshold: bool,
    /// permitd's own: draw on this permitd resource.
    permitd_resource: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_unit: Option<u32>,
    unit: Option<String>,
    unit_multiplier: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<RawReplace>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplace {
    name: Option<String>,
}

/// A time unit of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3 600 s.
    Hour,
    /// 86 400 s.
    Day,
    /// 7 days.
    Week,
    /// 30 days (as envoyproxy/ratelimit counts a month).
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// From the YAML (any case) or the proto enum's name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "second" => Self::Second,
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "year" => Self::Year,
            _ => return None,
        })
    }

    /// Its length.
    #[must_use]
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
            Self::Month => 30 * 86_400,
            Self::Year => 365 * 86_400,
        })
    }

    /// The proto's `RateLimitResponse.RateLimit.Unit` number.
    #[must_use]
    pub fn proto(self) -> i32 {
        match self {
            Self::Second => 1,
            Self::Minute => 2,
            Self::Hour => 3,
            Self::Day => 4,
            Self::Month => 5,
            Self::Year => 6,
            Self::Week => 7,
        }
    }

    /// From `envoy.type.v3.RateLimitUnit` (same numbers); `None` for UNKNOWN.
    #[must_use]
    pub fn from_proto(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::Second,
            2 => Self::Minute,
            3 => Self::Hour,
            4 => Self::Day,
            5 => Self::Month,
            6 => Self::Year,
            7 => Self::Week,
            _ => return None,
        })
    }
}

/// A rule's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Requests per `unit` x `multiplier`.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
    /// Units per window (1 unless `unit_multiplier`).
    pub multiplier: u32,
    /// The limit's `name` (for `replaces` and the response).
    pub name: String,
    /// Names of the limits this one replaces when both match one request (a name no limit
    /// has is allowed, as upstream: it never applies).
    pub replaces: Vec<String>,
}

impl Limit {
    /// The window: unit x multiplier.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.unit.duration() * self.multiplier
    }
}

/// One configured descriptor (a node of a domain's tree).
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Its key.
    pub key: String,
    /// Its value; `None`: any value, each its own bucket.
    pub value: Option<String>,
    /// Its limit, if any (`None` with `unlimited` false: no limit at this level).
    pub limit: Option<Limit>,
    /// `rate_limit.unlimited`: matched, never limited.
    pub unlimited: bool,
    /// Counted, never OVER_LIMIT.
    pub shadow_mode: bool,
    /// Metrics per value (bounded: see the metrics).
    pub detailed_metric: bool,
    /// permitd's own: the resource its hits draw on.
    pub permitd_resource: Option<String>,
    /// Where it is in the file, `key:value/key` (for names and metrics).
    pub path: String,
    /// The permitd resource its hits draw on (unqualified): `permitd_resource`, or
    /// `rls:DOMAIN:PATH` made to fit the name alphabet (computed once, at load).
    pub resource: String,
    /// Whether some level from the root to here matched any value (a partitioned bucket).
    pub per_value: bool,
    /// Children by `key_value`, `key` (value-less) and wildcard prefix.
    pub children: Level,
}

/// The rules of one level: exact `key`+`value`, value-less `key`, and `value: prefix*`.
#[derive(Debug, Clone, Default)]
pub struct Level {
    /// `(key, value)` -> rule.
    pub exact: HashMap<(String, String), Rule>,
    /// `key` -> rule matching any value.
    pub any: HashMap<String, Rule>,
    /// `(key, value pattern)` in file order: a value with `*` (any run of characters,
    /// anywhere in it, several allowed).
    pub prefix: Vec<(String, String, Rule)>,
}

/// Whether `value` matches `pattern`, where each `*` stands for any run of characters.
#[must_use]
pub fn glob(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Level {
    /// The rule an entry matches: exact first, then a wildcard prefix, then value-less.
    #[must_use]
    pub fn find(&self, key: &str, value: &str) -> Option<&Rule> {
        if let Some(r) = self.exact.get(&(key.to_owned(), value.to_owned())) {
            return Some(r);
        }
        if let Some((_, _, r)) = self
            .prefix
            .iter()
            .find(|(k, p, _)| k == key && glob(p, value))
        {
            return Some(r);
        }
        self.any.get(key)
    }

    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.exact
            .values()
            .chain(self.any.values())
            .chain(self.prefix.iter().map(|(_, _, r)| r))
    }
}

/// Every domain.
#[derive(Debug, Clone, Default)]
pub struct RlsConfig {
    /// Domain -> its top level.
    pub domains: HashMap<String, Level>,
}

impl RlsConfig {
    /// Load `path`: one YAML file, or every `*.yaml` / `*.yml` in a directory (sorted, not
    /// recursive).
    ///
    /// # Errors
    /// [`RlsConfigError`] naming the file and the path in it; nothing is kept.
    pub fn load(path: &Path) -> Result<Self, RlsConfigError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| RlsConfigError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let meta = std::fs::metadata(path).map_err(|source| RlsConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut files = Vec::new();
        if meta.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| RlsConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| RlsConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let p = e.path();
                if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut texts = Vec::new();
        for f in files {
            let text = read(&f)?;
            texts.push((f, text));
        }
        Self::from_texts(texts.iter().map(|(f, t)| (f.as_path(), t.as_str())))
    }

    /// Parse `(file, text)` pairs, each one domain.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Self, RlsConfigError> {
        let mut out = Self::default();
        for (file, text) in texts {
            let raw: RawRoot =
                serde_yaml_ng::from_str(text).map_err(|e| RlsConfigError::Parse {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                })?;
            let invalid = |path: &str, message: &str| RlsConfigError::Invalid {
                file: file.to_path_buf(),
                path: path.to_owned(),
                message: message.to_owned(),
            };
            let domain = raw.domain.unwrap_or_default();
            if domain.is_empty() {
                return Err(invalid("domain", "the domain must not be empty"));
            }
            if out.domains.contains_key(&domain) {
                return Err(invalid(
                    "domain",
                    &format!("duplicate domain {domain:?} (another file has it)"),
                ));
            }
            let level = level(
                raw.descriptors.unwrap_or_default(),
                &domain,
                "descriptors",
                "",
                false,
                &|p, m| invalid(p, m),
            )?;
            out.domains.insert(domain, level);
        }
        Ok(out)
    }

    /// Every rule of every domain: `(domain, rule)`.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.domains.iter().flat_map(|(d, l)| {
            let mut stack: Vec<&Rule> = l.rules().collect();
            let mut all = Vec::new();
            while let Some(r) = stack.pop() {
                all.push(r);
                stack.extend(r.children.rules());
            }
            all.into_iter().map(move |r| (d.as_str(), r))
        })
    }
}

type Invalid<'a> = dyn Fn(&str, &str) -> RlsConfigError + 'a;

fn level(
    raw: Vec<RawDescriptor>,
    domain: &str,
    at: &str,
    parent: &str,
    parent_per_value: bool,
    invalid: &Invalid<'_>,
) -> Result<Level, RlsConfigError> {
    let mut out = Level::default();
    for (i, d) in raw.into_iter().enumerate() {
        let here = format!("{at}[{i}]");
        let key = d.key.unwrap_or_default();
        if key.is_empty() {
            return Err(invalid(
                &format!("{here}.key"),
                "descriptor has an empty key",
            ));
        }
        let value = d.value.filter(|v| !v.is_empty());
        let path = match &value {
            Some(v) => format!("{parent}{key}:{v}"),
            None => format!("{parent}{key}"),
        };
        let wildcard = value.as_ref().filter(|v| v.contains('*')).cloned();
        if d.share_threshold && wildcard.is_none() {
            return Err(invalid(
                &format!("{here}.share_threshold"),
                "share_threshold can only be used with wildcard values",
            ));
        }
        // `share_threshold`: every value the wildcard matches shares one bucket.
        let per_value =
            parent_per_value || value.is_none() || (wildcard.is_some() && !d.share_threshold);
        let (limit, unlimited) = match d.rate_limit {
            None => (None, false),
            Some(rl) => rate_limit(rl, &format!("{here}.rate_limit"), invalid)?,
        };
        if let Some(name) = &d.permitd_resource
            && (name.is_empty() || crate::permits::resource::check_name(name, true, 200).is_err())
        {
            return Err(invalid(
                &format!("{here}.permitd_resource"),
                "not a valid permitd resource name",
            ));
        }
        let children = level(
            d.descriptors.unwrap_or_default(),
            domain,
            &format!("{here}.descriptors"),
            &format!("{path}/"),
            per_value,
            invalid,
        )?;
        let resource = d
            .permitd_resource
            .clone()
            .unwrap_or_else(|| super::resource_name(domain, &path));
        let rule = Rule {
            resource,
            key: key.clone(),
            value: value.clone(),
            limit,
            unlimited,
            shadow_mode: d.shadow_mode,
            detailed_metric: d.detailed_metric || d.value_to_metric,
            permitd_resource: d.permitd_resource,
            path,
            per_value,
            children,
        };
        let duplicate = match (&value, wildcard) {
            (_, Some(prefix)) => {
                if out.prefix.iter().any(|(k, p, _)| *k == key && *p == prefix) {
                    true
                } else {
                    out.prefix.push((key.clone(), prefix, rule));
                    false
                }
            }
            (Some(v), None) => out.exact.insert((key.clone(), v.clone()), rule).is_some(),
            (None, None) => out.any.insert(key.clone(), rule).is_some(),
        };
        if duplicate {
            return Err(invalid(
                &here,
                &format!(
                    "duplicate descriptor composite key {:?}",
                    match &value {
                        Some(v) => format!("{key}_{v}"),
                        None => key,
                    }
                ),
            ));
        }
    }
    Ok(out)
}

fn rate_limit(
    rl: RawRateLimit,
    at: &str,
    invalid: &Invalid<'_>,
) -> Result<(Option<Limit>, bool), RlsConfigError> {
    if rl.unlimited {
        // As upstream: a real unit beside `unlimited` is a mistake; an unknown one is ignored.
        if rl.unit.as_deref().and_then(Unit::parse).is_some() {
            return Err(invalid(
                &format!("{at}.unit"),
                "should not specify rate limit unit when unlimited",
            ));
        }
        return Ok((None, true));
    }
    let unit_text = rl.unit.unwrap_or_default();
    let unit = Unit::parse(&unit_text).ok_or_else(|| {
        invalid(
            &format!("{at}.unit"),
            &format!(
                "invalid rate limit unit {unit_text:?} (second, minute, hour, day, week, month or year)"
            ),
        )
    })?;
    let multiplier = rl.unit_multiplier.unwrap_or(1);
    if multiplier == 0 {
        return Err(invalid(
            &format!("{at}.unit_multiplier"),
            "must be at least 1",
        ));
    }
    let requests_per_unit = rl.requests_per_unit.unwrap_or(0);
    let mut replaces = Vec::new();
    for (i, r) in rl.replaces.into_iter().enumerate() {
        let name = r.name.unwrap_or_default();
        if name.is_empty() {
            return Err(invalid(
                &format!("{at}.replaces[{i}].name"),
                "should not have an empty replaces entry",
            ));
        }
        replaces.push(name);
    }
    let name = rl.name.unwrap_or_default();
    if !name.is_empty() && replaces.contains(&name) {
        return Err(invalid(
            &format!("{at}.replaces"),
            "replaces should not contain the limit's own name",
        ));
    }
    Ok((
        Some(Limit {
            requests_per_unit,
            unit,
            multiplier,
            name,
            replaces,
        }),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RlsConfig, RlsConfigError> {
        RlsConfig::from_texts([(Path::new("t.yaml"), yaml)])
    }

    /// Nested descriptors, exact and value-less keys, wildcards, units.
    #[test]
    fn parses_the_format() {
        let c = parse(
            "domain: d\ndescriptors:\n  - key: k\n    value: v\n    rate_limit: {unit: Minute, requests_per_unit: 5}\n  - key: ip\n    descriptors:\n      - key: path\n        value: /api*\n        rate_limit: {unit: second, requests_per_unit: 2, unit_multiplier: 3}\n",
        )
        .unwrap();
        let d = &c.domains["d"];
        let r = d.find("k", "v").unwrap();
        assert_eq!(r.limit.as_ref().unwrap().requests_per_unit, 5);
        assert!(!r.per_value);
        assert!(d.find("k", "w").is_none());
        let ip = d.find("ip", "1.2.3.4").unwrap();
        let p = ip.children.find("path", "/api/x").unwrap();
        assert!(p.per_value);
        assert_eq!(p.limit.as_ref().unwrap().period(), Duration::from_secs(3));
        assert_eq!(p.path, "ip/path:/api*");
    }

    /// Errors name the file and the path in it.
    #[test]
    fn errors_name_the_path() {
        for (yaml, path) in [
            ("descriptors: []\n", "domain"),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
                "descriptors[0].rate_limit.unit",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n",
                "descriptors[0].rate_limit.unit",
            ),
            (
                "domain: d\ndescriptors:\n  - value: v\n",
                "descriptors[0].key",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n  - key: k\n",
                "descriptors[1]",
            ),
        ] {
            let e = parse(yaml).unwrap_err().to_string();
            assert!(e.contains("t.yaml") && e.contains(path), "{e}");
        }
        let e = parse("domain: d\ndescriptors:\n  - key: k\n    rate_limt: {}\n").unwrap_err();
        assert!(e.to_string().contains("rate_limt"), "{e}");
    }
}
