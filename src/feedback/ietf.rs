//! IETF draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`, structured
//! fields (RFC 9651) parsed by the `sfv` crate, never by string splitting.
//!
//! `RateLimit-Policy: "burst";q=100;w=60,"daily";q=1000;w=86400` lists quota policies;
//! `RateLimit: "burst";r=50;t=30` says what is left of each, joined by policy name. The two
//! fields may come in any order, so members are collected and joined in [`State::finish`]. A
//! field that fails to parse is ignored whole (the draft's rule); a member that parses but
//! breaks the draft (no `q`, a negative `r`, an unknown unit) is skipped and counted alone,
//! so one bad policy doesn't hide the others. The partition key `pk` is not used: permitd
//! partitions by its own key, and the join is by name.

use std::time::Duration;

use super::value::{self, Why};
use super::{DimensionObs, Refill};

/// Most members kept per field across all its headers; more are counted as ignored.
const MAX_MEMBERS: usize = 32;

/// A header of this dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// `ratelimit-policy`.
    Policy,
    /// `ratelimit`.
    RateLimit,
}

impl Field {
    /// The field a lower-case name denotes, if it is one of this dialect's.
    pub(super) fn recognise(lower: &str) -> Option<Self> {
        match lower {
            "ratelimit-policy" => Some(Self::Policy),
            "ratelimit" => Some(Self::RateLimit),
            _ => None,
        }
    }

    /// Its lower-case name.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Policy => "ratelimit-policy",
            Self::RateLimit => "ratelimit",
        }
    }
}

/// One quota policy of `RateLimit-Policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    name: String,
    quota: u64,
    window: Option<Duration>,
    dimension: &'static str,
}

/// One member of `RateLimit`: what is left of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Service {
    name: String,
    remaining: u64,
    reset_after: Option<Duration>,
}

/// What the dialect's headers said so far.
#[derive(Debug, Default)]
pub(super) struct State {
    policies: Vec<Policy>,
    services: Vec<Service>,
    /// Members skipped (field name, why), reported with the observation's ignored.
    skipped: Vec<(&'static str, Why)>,
}

impl State {
    /// Take one header's value; `Err` when the whole field is malformed.
    pub(super) fn apply(&mut self, f: Field, v: &str) -> Result<(), Why> {
        let list: sfv::List = sfv::Parser::new(v)
            .parse()
            .map_err(|_| "malformed structured field")?;
        if list.is_empty() {
            return Err("empty");
        }
        for entry in &list {
            let sfv::ListEntry::Item(item) = entry else {
                self.skipped.push((f.name(), "inner list"));
                continue;
            };
            let kept = match f {
                Field::Policy => policy(item).map(|p| push(&mut self.policies, p)),
                Field::RateLimit => service(item).map(|s| push(&mut self.services, s)),
            };
            match kept {
                Ok(true) => {}
                Ok(false) => self.skipped.push((f.name(), "too many members")),
                Err(why) => self.skipped.push((f.name(), why)),
            }
        }
        Ok(())
    }

    /// Join services to their policies: a service names its policy's unit, quota and
    /// window; a service without a policy counts requests (the draft's default unit); a
    /// policy without a service still teaches a limit.
    pub(super) fn finish(self, ignored: &mut Vec<(String, Why)>) -> Vec<DimensionObs> {
        ignored.extend(self.skipped.iter().map(|&(n, w)| (n.to_owned(), w)));
        let mut used = vec![false; self.policies.len()];
        let mut out = Vec::with_capacity(self.services.len() + self.policies.len());
        for s in self.services {
            let matched = self.policies.iter().position(|p| p.name == s.name);
            let policy = matched.and_then(|i| {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
                self.policies.get(i)
            });
            out.push(DimensionObs {
                dimension: policy.map_or("requests", |p| p.dimension).to_owned(),
                limit: policy.map(|p| p.quota),
                remaining: Some(s.remaining),
                reset_after: s.reset_after,
                window: policy.and_then(|p| p.window),
                source: Field::RateLimit.name().to_owned(),
                refill: Refill::Unstated,
                resolution: super::SECONDS,
            });
        }
        for (p, used) in self.policies.into_iter().zip(used) {
            if !used {
                out.push(DimensionObs {
                    dimension: p.dimension.to_owned(),
                    limit: Some(p.quota),
                    remaining: None,
                    reset_after: None,
                    window: p.window,
                    source: Field::Policy.name().to_owned(),
                    refill: Refill::Unstated,
                    resolution: super::SECONDS,
                });
            }
        }
        out
    }
}

/// Append unless full; whether it was kept.
fn push<T>(v: &mut Vec<T>, x: T) -> bool {
    let room = v.len() < MAX_MEMBERS;
    if room {
        v.push(x);
    }
    room
}

/// A member's name: the draft says a String; a Token is accepted too since some servers
/// write one and it can't be mistaken for anything else.
fn name(item: &sfv::Item) -> Result<String, Why> {
    match &item.bare_item {
        sfv::BareItem::String(s) => Ok(s.as_str().to_owned()),
        sfv::BareItem::Token(t) => Ok(t.as_str().to_owned()),
        _ => Err("member name not a string"),
    }
}

/// A `RateLimit-Policy` member: `"name";q=<quota>[;w=<seconds>][;qu="<unit>"][;pk=:…:]`.
fn policy(item: &sfv::Item) -> Result<Policy, Why> {
    let name = name(item)?;
    let quota = value::sf_count(value::sf_param(&item.params, "q").ok_or("missing q")?)?;
    let window = value::sf_param(&item.params, "w")
        .map(value::sf_window)
        .transpose()?;
    let dimension = match value::sf_param(&item.params, "qu") {
        None => "requests",
        Some(u) => unit(u)?,
    };
    Ok(Policy {
        name,
        quota,
        window,
        dimension,
    })
}

/// A quota unit as a permitd dimension.
fn unit(u: &sfv::BareItem) -> Result<&'static str, Why> {
    let word = match u {
        sfv::BareItem::String(s) => s.as_str(),
        sfv::BareItem::Token(t) => t.as_str(),
        _ => return Err("unknown quota unit"),
    };
    match word {
        "requests" => Ok("requests"),
        "content-bytes" => Ok("content_bytes"),
        "concurrent-requests" => Ok("concurrent_requests"),
        _ => Err("unknown quota unit"),
    }
}

/// A `RateLimit` member: `"name";r=<remaining>[;t=<seconds>][;pk=:…:]`.
fn service(item: &sfv::Item) -> Result<Service, Why> {
    let name = name(item)?;
    let remaining = value::sf_count(value::sf_param(&item.params, "r").ok_or("missing r")?)?;
    let reset_after = value::sf_param(&item.params, "t")
        .map(|t| value::sf_count(t).and_then(value::delta_secs))
        .transpose()?;
    Ok(Service {
        name,
        remaining,
        reset_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(f: Field, v: &str) -> (Result<(), Why>, State) {
        let mut s = State::default();
        (s.apply(f, v), s)
    }

    /// Policy members, good and bad, one at a time.
    #[test]
    fn policies() {
        let p = |name: &str, quota, w: Option<u64>, dimension| Policy {
            name: name.to_owned(),
            quota,
            window: w.map(Duration::from_secs),
            dimension,
        };
        let table: &[(&str, Result<Policy, Why>)] = &[
            (
                r#""burst";q=100;w=60"#,
                Ok(p("burst", 100, Some(60), "requests")),
            ),
            (
                r#""daily";q=1000;w=86400"#,
                Ok(p("daily", 1000, Some(86400), "requests")),
            ),
            (r#"default;q=10"#, Ok(p("default", 10, None, "requests"))),
            (
                r#""b";q=1;qu="content-bytes";pk=:cHJvamVjdDEyMw==:"#,
                Ok(p("b", 1, None, "content_bytes")),
            ),
            (
                r#""c";q=5;qu="concurrent-requests""#,
                Ok(p("c", 5, None, "concurrent_requests")),
            ),
            (r#""x";w=60"#, Err("missing q")),
            (r#""x";q=-1"#, Err("negative")),
            (r#""x";q=1.5"#, Err("not an integer")),
            (r#""x";q="10""#, Err("not a number")),
            (r#""x";q=1;w=0"#, Err("zero window")),
            (r#""x";q=1;w=99999999999"#, Err("too far in the future")),
            (r#""x";q=1;qu="bananas""#, Err("unknown quota unit")),
            (r#"10;q=1"#, Err("member name not a string")),
        ];
        for (input, want) in table {
            let list: sfv::List = sfv::Parser::new(input).parse().unwrap();
            let sfv::ListEntry::Item(item) = &list[0] else {
                panic!("{input}")
            };
            assert_eq!(policy(item), *want, "{input}");
        }
    }

    /// Whole fields: malformed ones are refused, bad members skipped one by one.
    #[test]
    fn fields() {
        for bad in [
            "",
            "\"burst\";q=100;w=60,",
            "\"unterminated;q=1",
            "burst;Q=1",
            "\"a\" \"b\"",
            "q=100, w=60",
        ] {
            let (r, _) = field(Field::Policy, bad);
            assert!(r.is_err(), "{bad:?}");
        }
        let (r, s) = field(Field::Policy, r#""a";q=1, "b";w=1, ("c" "d"), "e";q=2"#);
        assert_eq!(r, Ok(()));
        assert_eq!(s.policies.len(), 2);
        assert_eq!(
            s.skipped,
            vec![
                ("ratelimit-policy", "missing q"),
                ("ratelimit-policy", "inner list")
            ]
        );
        let many = vec![r#""p";q=1"#; 40].join(",");
        let (_, s) = field(Field::Policy, &many);
        assert_eq!(s.policies.len(), MAX_MEMBERS);
        assert_eq!(s.skipped.len(), 40 - MAX_MEMBERS);
    }

    /// RateLimit members: r is required, t optional.
    #[test]
    fn services() {
        let (r, s) = field(
            Field::RateLimit,
            r#""default";r=50;t=30, "x";t=1, "y";r=-1, "z";r=1;t=-1"#,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            s.services,
            vec![Service {
                name: "default".into(),
                remaining: 50,
                reset_after: Some(Duration::from_secs(30)),
            }]
        );
        assert_eq!(
            s.skipped.iter().map(|s| s.1).collect::<Vec<_>>(),
            vec!["missing r", "negative", "negative"]
        );
    }
}
