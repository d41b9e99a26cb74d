//! Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
//! {limit,remaining,reset}`, resets as RFC 3339 timestamps (`2025-10-25T12:00:00Z`).
//!
//! `humantime` reads the date and time, but its "weak" parser tolerates trailing garbage and
//! reads any `+hh:mm` offset as UTC, so the shape and the offset are checked here first and
//! the offset applied by hand. Tokens remaining come rounded to the nearest thousand: that is
//! the upstream's precision, taken as it is.

use std::time::{Duration, SystemTime};

use super::value::{self, Pick, Why};
use super::{Kind, KindField, PerKind, What};

/// Every field with its lower-case name.
pub(super) const FIELDS: [(&str, What, Kind); 12] = [
    (
        "anthropic-ratelimit-requests-limit",
        What::Limit,
        Kind::Requests,
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        What::Remaining,
        Kind::Requests,
    ),
    (
        "anthropic-ratelimit-requests-reset",
        What::Reset,
        Kind::Requests,
    ),
    (
        "anthropic-ratelimit-tokens-limit",
        What::Limit,
        Kind::Tokens,
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        What::Remaining,
        Kind::Tokens,
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        What::Reset,
        Kind::Tokens,
    ),
    (
        "anthropic-ratelimit-input-tokens-limit",
        What::Limit,
        Kind::InputTokens,
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        What::Remaining,
        Kind::InputTokens,
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        What::Reset,
        Kind::InputTokens,
    ),
    (
        "anthropic-ratelimit-output-tokens-limit",
        What::Limit,
        Kind::OutputTokens,
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        What::Remaining,
        Kind::OutputTokens,
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        What::Reset,
        Kind::OutputTokens,
    ),
];

/// What the dialect's headers said so far.
#[derive(Debug, Default)]
pub(super) struct State(PerKind);

impl State {
    /// Take one header's value.
    pub(super) fn apply(&mut self, f: KindField, v: &str, now: SystemTime) -> Result<(), Why> {
        let p = self.0.kind(f.kind);
        match f.what {
            What::Limit => p.limit(value::counts(v, Pick::Min)?, f.name),
            What::Remaining => p.remaining(value::counts(v, Pick::Min)?, f.name),
            What::Reset => {
                let d = value::each(v, Pick::Max, |s| value::until(now, rfc3339(s)?))?;
                p.reset(d, f.name);
            }
        }
        Ok(())
    }

    /// One entry per kind that received a figure. Anthropic documents its reset as "when the rate limit will be fully replenished":
    /// a token bucket, whose units come back continuously.
    pub(super) fn finish(self) -> impl Iterator<Item = super::DimensionObs> {
        self.0.finish(super::Refill::Continuous, super::SECONDS)
    }
}

/// An RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)` (`t`, `z` and a space for
/// `T` allowed, as RFC 3339 §5.6 notes). Years before 1970 are refused by `humantime`.
pub(super) fn rfc3339(s: &str) -> Result<SystemTime, Why> {
    const BAD: Why = "not an RFC 3339 timestamp";
    if !s.is_ascii() {
        return Err(BAD);
    }
    // Split off the offset; `east` is how far local time is ahead of UTC.
    let (local, east) = if let Some(l) = s.strip_suffix(['Z', 'z']) {
        (l, None)
    } else {
        let at = s.len().checked_sub(6).ok_or(BAD)?;
        let (l, off) = s.split_at_checked(at).ok_or(BAD)?;
        (l, Some(offset(off).ok_or(BAD)?))
    };
    let b = local.as_bytes();
    let shape = b.len() >= 19
        && b.iter().enumerate().take(19).all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => matches!(c, b'T' | b't' | b' '),
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        })
        && match b.get(19..) {
            Some([]) | None => true,
            Some([b'.', frac @ ..]) => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        };
    if !shape {
        return Err(BAD);
    }
    // humantime takes `T` or a space, not the lower-case `t` RFC 3339 also allows.
    let upper;
    let local = match (local.get(..10), local.get(10..)) {
        (Some(date), Some(rest)) if rest.starts_with('t') => {
            upper = format!("{date}T{}", rest.get(1..).unwrap_or(""));
            upper.as_str()
        }
        _ => local,
    };
    let t = humantime::parse_rfc3339_weak(local).map_err(|_| BAD)?;
    match east {
        None => Ok(t),
        Some((true, d)) => t.checked_sub(d).ok_or(BAD),
        Some((false, d)) => t.checked_add(d).ok_or(BAD),
    }
}

/// `±hh:mm` as (east of UTC, amount); hours up to 23, minutes up to 59.
fn offset(s: &str) -> Option<(bool, Duration)> {
    let &[sign, h1, h2, b':', m1, m2] = s.as_bytes() else {
        return None;
    };
    let east = match sign {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    let digit = |c: u8| c.is_ascii_digit().then(|| u64::from(c - b'0'));
    let hours = digit(h1)? * 10 + digit(h2)?;
    let minutes = digit(m1)? * 10 + digit(m2)?;
    (hours <= 23 && minutes <= 59).then(|| (east, Duration::from_secs(hours * 3600 + minutes * 60)))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// 2025-10-25T12:00:00Z, the example of headers.md.
    const NOON: u64 = 1_761_393_600;

    /// Timestamps in UTC, with offsets and fractions, and malformed ones.
    #[test]
    fn timestamps() {
        let at = |s| Ok(UNIX_EPOCH + Duration::from_secs(s));
        let table: &[(&str, Result<SystemTime, Why>)] = &[
            ("2025-10-25T12:00:00Z", at(NOON)),
            ("2025-10-25t12:00:00z", at(NOON)),
            ("2025-10-25 12:00:00Z", at(NOON)),
            ("2025-10-25T14:30:00+02:30", at(NOON)),
            ("2025-10-25T07:00:00-05:00", at(NOON)),
            ("2025-10-25T12:00:00+00:00", at(NOON)),
            (
                "2025-10-25T12:00:00.5Z",
                Ok(UNIX_EPOCH + Duration::from_millis(NOON * 1000 + 500)),
            ),
            (
                "2025-10-25T12:00:00.123456789123Z",
                Ok(UNIX_EPOCH + Duration::new(NOON, 123_456_789)),
            ),
            ("2025-10-25T12:00:00", Err("not an RFC 3339 timestamp")),
            ("2025-10-25T12:00:00Zjunk", Err("not an RFC 3339 timestamp")),
            (
                "2025-10-25T12:00:00+99:00",
                Err("not an RFC 3339 timestamp"),
            ),
            ("2025-10-25T12:00:00.Z", Err("not an RFC 3339 timestamp")),
            (
                "2025-10-25T12:00:00.5+01:00x",
                Err("not an RFC 3339 timestamp"),
            ),
            ("2025-13-25T12:00:00Z", Err("not an RFC 3339 timestamp")),
            ("2025-02-30T12:00:00Z", Err("not an RFC 3339 timestamp")),
            ("1969-12-31T23:59:59Z", Err("not an RFC 3339 timestamp")),
            // Valid, before the epoch: `until` refuses it as far in the past.
            (
                "1970-01-01T00:00:00+01:00",
                Ok(UNIX_EPOCH - Duration::from_secs(3600)),
            ),
            ("2025-10-25", Err("not an RFC 3339 timestamp")),
            ("1761393600", Err("not an RFC 3339 timestamp")),
            ("", Err("not an RFC 3339 timestamp")),
            ("2025-10-25T12:00:00ü", Err("not an RFC 3339 timestamp")),
            ("２025-10-25T12:00:00Z", Err("not an RFC 3339 timestamp")),
        ];
        for (input, want) in table {
            assert_eq!(rfc3339(input), *want, "{input:?}");
        }
    }
}
