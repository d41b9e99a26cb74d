//! Classic `X-RateLimit-*` (GitHub's dialect included) and the older IETF drafts'
//! `RateLimit-Limit/Remaining/Reset` (envoyproxy/ratelimit, limitador).
//!
//! Both count requests. A reset is delta-seconds or a UNIX timestamp, told apart by size
//! (`value::epoch_or_delta`); the older drafts promise delta-seconds, but the same rule is
//! applied to them since a real delta is never a year long and some servers send epochs
//! there too. A limit may carry draft-03 policies (`3, 3;w=3600`), which is a structured-field
//! list, so it goes to the `sfv` parser rather than to string splitting.

use std::time::{Duration, SystemTime};

use super::value::{self, Pick, Why};
use super::{DimensionObs, Partial, Refill};

/// The dimension both families count.
const REQUESTS: &str = "requests";

/// Longest `x-ratelimit-resource` kept; GitHub's names are short words.
const MAX_RESOURCE_LEN: usize = 64;

/// A header of this dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// `x-ratelimit-limit`.
    XLimit,
    /// `x-ratelimit-remaining`.
    XRemaining,
    /// `x-ratelimit-reset`.
    XReset,
    /// `x-ratelimit-used` (GitHub and others).
    XUsed,
    /// `x-ratelimit-resource` (GitHub).
    XResource,
    /// `ratelimit-limit` (older IETF drafts).
    DraftLimit,
    /// `ratelimit-remaining`.
    DraftRemaining,
    /// `ratelimit-reset`.
    DraftReset,
}

/// Every field with its lower-case name.
const FIELDS: [(&str, Field); 8] = [
    ("x-ratelimit-limit", Field::XLimit),
    ("x-ratelimit-remaining", Field::XRemaining),
    ("x-ratelimit-reset", Field::XReset),
    ("x-ratelimit-used", Field::XUsed),
    ("x-ratelimit-resource", Field::XResource),
    ("ratelimit-limit", Field::DraftLimit),
    ("ratelimit-remaining", Field::DraftRemaining),
    ("ratelimit-reset", Field::DraftReset),
];

impl Field {
    /// The field a lower-case name denotes, if it is one of this dialect's.
    pub(super) fn recognise(lower: &str) -> Option<Self> {
        FIELDS.iter().find(|(n, _)| *n == lower).map(|(_, f)| *f)
    }

    /// Its lower-case name.
    pub(super) fn name(self) -> &'static str {
        FIELDS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("x-ratelimit", |(n, _)| n)
    }
}

/// What the dialect's headers said so far.
#[derive(Debug, Default)]
pub(super) struct State {
    x: Partial,
    used: Option<u64>,
    draft: Partial,
    resource: Option<String>,
}

/// The dialect's contribution to an observation.
pub(super) struct Finished {
    /// Up to two entries: `X-RateLimit-*` and `RateLimit-*`.
    pub(super) dimensions: Vec<DimensionObs>,
    /// GitHub's `x-ratelimit-resource`.
    pub(super) resource: Option<String>,
}

impl State {
    /// Take one header's value.
    pub(super) fn apply(&mut self, f: Field, v: &str, now: SystemTime) -> Result<(), Why> {
        let name = f.name();
        match f {
            Field::XLimit | Field::DraftLimit => {
                let (limit, window) = limit(v)?;
                let p = self.family(f);
                p.limit(limit, name);
                p.window = p.window.or(window);
            }
            Field::XRemaining | Field::DraftRemaining => {
                let r = value::counts(v, Pick::Min)?;
                self.family(f).remaining(r, name);
            }
            Field::XReset | Field::DraftReset => {
                let d = value::each(v, Pick::Max, |s| {
                    value::epoch_or_delta(value::count(s)?, now)
                })?;
                self.family(f).reset(d, name);
            }
            Field::XUsed => {
                // Most used is most restrictive; only read when remaining is missing.
                let u = value::counts(v, Pick::Max)?;
                self.used = Some(self.used.map_or(u, |o| o.max(u)));
            }
            Field::XResource => {
                let r = resource(v)?;
                match &self.resource {
                    Some(old) if *old != r => return Err("conflicting values"),
                    _ => self.resource = Some(r.to_owned()),
                }
            }
        }
        Ok(())
    }

    /// The figures of `f`'s family.
    fn family(&mut self, f: Field) -> &mut Partial {
        match f {
            Field::DraftLimit | Field::DraftRemaining | Field::DraftReset => &mut self.draft,
            _ => &mut self.x,
        }
    }

    /// The dialect's entries: a missing remaining is derived from limit and used (GitHub
    /// sends both, other APIs only used). Their resets are fixed windows' (GitHub documents
    /// it; envoy, limitador and Kong count in fixed windows): nothing comes back before.
    pub(super) fn finish(self) -> Finished {
        let mut x = self.x;
        if let (None, Some((limit, _)), Some(used)) = (x.remaining, x.limit, self.used) {
            x.remaining = Some((limit.saturating_sub(used), "x-ratelimit-used"));
        }
        Finished {
            dimensions: [
                x.into_obs(REQUESTS, Refill::AtReset, super::SECONDS),
                self.draft
                    .into_obs(REQUESTS, Refill::AtReset, super::SECONDS),
            ]
            .into_iter()
            .flatten()
            .collect(),
            resource: self.resource,
        }
    }
}

/// A limit, maybe with draft-03 policies: `1000`, `3, 3;w=3600`, `10, 10;w=1, 50;w=60`.
///
/// The limit is the lowest plain member (several plain members are folded duplicates), or
/// the first member when all carry a window; the window is that of the first policy whose
/// quota equals the limit.
fn limit(v: &str) -> Result<(u64, Option<Duration>), Why> {
    if !v.contains([',', ';']) {
        return Ok((value::count(v)?, None));
    }
    let list: sfv::List = sfv::Parser::new(v)
        .parse()
        .map_err(|_| "malformed structured field")?;
    let mut first = None;
    let mut plain: Option<u64> = None;
    let mut policies = Vec::new();
    for entry in &list {
        let sfv::ListEntry::Item(item) = entry else {
            return Err("inner list in a limit");
        };
        let n = value::sf_count(&item.bare_item)?;
        first = first.or(Some(n));
        match value::sf_param(&item.params, "w") {
            Some(w) => policies.push((n, value::sf_window(w)?)),
            None => plain = Some(plain.map_or(n, |p| p.min(n))),
        }
    }
    let limit = plain.or(first).ok_or("empty")?;
    let window = policies.iter().find(|(q, _)| *q == limit).map(|(_, w)| *w);
    Ok((limit, window))
}

/// GitHub's resource name: a short word (`core`, `search`, `graphql`,
/// `code_scanning_upload`), refused otherwise so garbage can't become a label.
fn resource(v: &str) -> Result<&str, Why> {
    let ok = !v.is_empty()
        && v.len() <= MAX_RESOURCE_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(v)
    } else {
        Err("not a resource name")
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    type Limit = Result<(u64, Option<Duration>), Why>;

    /// Limits with and without draft-03 policies.
    #[test]
    fn limits() {
        let w = |s| Some(Duration::from_secs(s));
        let table: &[(&str, Limit)] = &[
            ("1000", Ok((1000, None))),
            ("3, 3;w=3600", Ok((3, w(3600)))),
            ("10, 10;w=1, 50;w=60", Ok((10, w(1)))),
            ("10;w=1, 50;w=60", Ok((10, w(1)))),
            ("100;w=60;comment=\"x\"", Ok((100, w(60)))),
            ("10, 10", Ok((10, None))),
            ("10, 7", Ok((7, None))),
            ("5, 10;w=60", Ok((5, None))),
            ("3, 3;w=0", Err("zero window")),
            ("3, 3;w=-1", Err("negative")),
            ("3, 3;w=1.5", Err("not an integer")),
            ("3, 3;w=99999999999", Err("too far in the future")),
            ("-3, 3", Err("negative")),
            ("1.5, 2", Err("not an integer")),
            ("(1 2), 3", Err("inner list in a limit")),
            ("3,, 3", Err("malformed structured field")),
            ("3;", Err("malformed structured field")),
            ("abc;w=1", Err("not a number")),
            ("1.5", Err("not an integer")),
            ("-1", Err("negative")),
        ];
        for (input, want) in table {
            assert_eq!(limit(input), *want, "{input:?}");
        }
    }

    /// Resource names are short words.
    #[test]
    fn resources() {
        assert_eq!(resource("core"), Ok("core"));
        assert_eq!(resource("code_scanning_upload"), Ok("code_scanning_upload"));
        assert!(resource("").is_err());
        assert!(resource("a b").is_err());
        assert!(resource(&"x".repeat(65)).is_err());
        assert!(resource("ü").is_err());
    }

    /// GitHub's used fills in a missing remaining, never below zero.
    #[test]
    fn used_derives_remaining() {
        let now = UNIX_EPOCH + Duration::from_secs(1_655_120_000);
        let mut s = State::default();
        s.apply(Field::XLimit, "60", now).unwrap();
        s.apply(Field::XUsed, "61", now).unwrap();
        let f = s.finish();
        assert_eq!(f.dimensions[0].remaining, Some(0));
        assert_eq!(f.dimensions[0].source, "x-ratelimit-used");
    }
}
