//! OpenAI and OpenAI-compatible APIs (Groq, gateways): `x-ratelimit-{limit,remaining,reset}-
//! {requests,tokens}`, resets as Go-style durations (`6m0s`, `2m59.56s`, `20ms`).
//!
//! The Go duration grammar is small and exact, so it is parsed here by hand, in integer
//! nanoseconds (no float rounding: `2m59.56s` is exactly 179.56 s). Gateways that send `-1`
//! mean "unknown": that is no figure, not an error. `input-tokens` / `output-tokens` kinds
//! are accepted too, as some compatible APIs split tokens the way Anthropic does.

use std::time::Duration;

use super::value::{self, MAX_HORIZON, Pick, Why};
use super::{Kind, KindField, PerKind, What};

/// Every field with its lower-case name.
pub(super) const FIELDS: [(&str, What, Kind); 12] = [
    ("x-ratelimit-limit-requests", What::Limit, Kind::Requests),
    ("x-ratelimit-limit-tokens", What::Limit, Kind::Tokens),
    (
        "x-ratelimit-limit-input-tokens",
        What::Limit,
        Kind::InputTokens,
    ),
    (
        "x-ratelimit-limit-output-tokens",
        What::Limit,
        Kind::OutputTokens,
    ),
    (
        "x-ratelimit-remaining-requests",
        What::Remaining,
        Kind::Requests,
    ),
    (
        "x-ratelimit-remaining-tokens",
        What::Remaining,
        Kind::Tokens,
    ),
    (
        "x-ratelimit-remaining-input-tokens",
        What::Remaining,
        Kind::InputTokens,
    ),
    (
        "x-ratelimit-remaining-output-tokens",
        What::Remaining,
        Kind::OutputTokens,
    ),
    ("x-ratelimit-reset-requests", What::Reset, Kind::Requests),
    ("x-ratelimit-reset-tokens", What::Reset, Kind::Tokens),
    (
        "x-ratelimit-reset-input-tokens",
        What::Reset,
        Kind::InputTokens,
    ),
    (
        "x-ratelimit-reset-output-tokens",
        What::Reset,
        Kind::OutputTokens,
    ),
];

/// What the dialect's headers said so far.
#[derive(Debug, Default)]
pub(super) struct State(PerKind);

impl State {
    /// Take one header's value.
    pub(super) fn apply(&mut self, f: KindField, v: &str) -> Result<(), Why> {
        if v == "-1" {
            return Ok(());
        }
        let p = self.0.kind(f.kind);
        match f.what {
            What::Limit => p.limit(value::counts(v, Pick::Min)?, f.name),
            What::Remaining => p.remaining(value::counts(v, Pick::Min)?, f.name),
            What::Reset => p.reset(value::each(v, Pick::Max, duration)?, f.name),
        }
        Ok(())
    }

    /// One entry per kind that received a figure. OpenAI documents its reset as "the time until the rate limit resets to its initial state":
    /// a token bucket, whose units come back continuously.
    pub(super) fn finish(self) -> impl Iterator<Item = super::DimensionObs> {
        self.0
            .finish(super::Refill::Continuous, super::MILLISECONDS)
    }
}

/// Nanoseconds per Go duration unit.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 micro sign
    ("μs", 1_000), // U+03BC Greek mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits kept; Go keeps fewer. 18 digits times the largest unit still fits u128.
const MAX_FRACTION_DIGITS: usize = 18;

/// A Go `time.ParseDuration` string (`1h2m3s`, `1.5s`, `20ms`, `0`), non-negative and within
/// the horizon. A bare number (`"60"`, `"1.5"`) is read as seconds: Go would refuse it, but
/// some OpenAI-compatible gateways send one and seconds is what they mean.
pub(super) fn duration(s: &str) -> Result<Duration, Why> {
    let s = value::trim(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err("empty");
    }
    if s.starts_with('-') {
        return Err("negative");
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bare = s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, tail) = component(rest, bare)?;
        total = total.checked_add(nanos).ok_or("out of range")?;
        if total > MAX_HORIZON.as_nanos() {
            return Err("too far in the future");
        }
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| "out of range")?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| "out of range")?;
    value::within_horizon(Duration::new(secs, sub))
}

/// One `<number><unit>` of a duration (the unit is seconds when `bare`); its nanoseconds and
/// what follows.
fn component(s: &str, bare: bool) -> Result<(u128, &str), Why> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int_digits, after_int) = s.split_at(int_len);
    let (frac_digits, after_num) = match after_int.strip_prefix('.') {
        Some(t) => t.split_at(t.bytes().take_while(u8::is_ascii_digit).count()),
        None => ("", after_int),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err("not a duration");
    }
    let (unit, tail) = if bare {
        // A bare number is one component: "1.2.3" is not 1.5 s.
        if !after_num.is_empty() {
            return Err("not a duration");
        }
        (1_000_000_000, after_num)
    } else {
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, tail) = after_num.split_at(unit_len);
        let ns = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, ns)| *ns)
            .ok_or(if unit.is_empty() {
                "missing unit"
            } else {
                "not a duration"
            })?;
        (ns, tail)
    };
    // Integer part: checked, a u128 of nanoseconds overflows only on absurd input.
    let int: u128 = if int_digits.is_empty() {
        0
    } else {
        int_digits.parse().map_err(|_| "out of range")?
    };
    let mut nanos = int.checked_mul(unit).ok_or("out of range")?;
    // Fraction: the first digits as an integer over a power of ten; the rest can't matter.
    let kept = frac_digits
        .get(..frac_digits.len().min(MAX_FRACTION_DIGITS))
        .unwrap_or("");
    if !kept.is_empty() {
        let num: u128 = kept.parse().map_err(|_| "not a duration")?;
        let digits = u32::try_from(kept.len()).map_err(|_| "not a duration")?;
        nanos = nanos
            .checked_add(num * unit / 10u128.pow(digits))
            .ok_or("out of range")?;
    }
    Ok((nanos, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go durations of headers.md and Go's own grammar, plus bad input.
    #[test]
    fn durations() {
        let ms = |m| Ok(Duration::from_millis(m));
        let table: &[(&str, Result<Duration, Why>)] = &[
            ("20ms", ms(20)),
            ("1s", ms(1000)),
            ("1.5s", ms(1500)),
            ("6m0s", ms(360_000)),
            ("2m59.56s", ms(179_560)),
            ("1h2m3s", ms(3_723_000)),
            ("0", ms(0)),
            ("0s", ms(0)),
            ("+1s", ms(1000)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("1h1h", ms(7_200_000)),
            ("300us", Ok(Duration::from_micros(300))),
            ("300µs", Ok(Duration::from_micros(300))),
            ("300μs", Ok(Duration::from_micros(300))),
            ("7ns", Ok(Duration::from_nanos(7))),
            ("1.000000000000000000001s", ms(1000)),
            (
                "0.333333333333333333333333h",
                ms(1_200_000).map(|d| d - Duration::from_nanos(1)),
            ),
            // Bare numbers from lenient gateways: seconds.
            ("60", ms(60_000)),
            ("1.5", ms(1500)),
            ("", Err("empty")),
            ("-1s", Err("negative")),
            ("-1", Err("negative")),
            ("1x", Err("not a duration")),
            ("1s5", Err("missing unit")),
            ("s", Err("not a duration")),
            (".s", Err("not a duration")),
            ("1..5s", Err("missing unit")),
            ("1d", Err("not a duration")),
            ("1 s", Err("not a duration")),
            ("9000h", Err("too far in the future")),
            ("99999999999999999999h", Err("too far in the future")),
            (
                "999999999999999999999999999999999999999h",
                Err("out of range"),
            ),
            ("1.2.3", Err("not a duration")),
        ];
        for (input, want) in table {
            assert_eq!(duration(input), *want, "{input:?}");
        }
    }
}
