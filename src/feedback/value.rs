//! Number and time rules every dialect shares: strict integers, comma-joined duplicates,
//! epoch-or-delta resets and the horizon beyond which a moment is garbage.
//!
//! Errors are `&'static str` reasons, not a type: they only feed the "ignored" counter and
//! its label, and a static string costs nothing on the hot path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest header value looked at, in bytes (4 KiB): longer ones are ignored unread, which
/// bounds the work per header.
pub const MAX_VALUE_LEN: usize = 4096;

/// Furthest a reset, Retry-After or window may lie from `now` (366 days): nothing real waits
/// longer, and a larger figure is a unit mix-up (milliseconds for seconds) or garbage that
/// would otherwise block a resource for years.
pub const MAX_HORIZON: Duration = Duration::from_secs(366 * 86_400);

/// A reset figure at least this large (about a year of seconds) is a UNIX timestamp, a
/// smaller one delta-seconds (`headers.md`): no provider resets more than a year ahead and
/// no epoch is that small.
pub(super) const EPOCH_THRESHOLD_SECS: u64 = 365 * 86_400;

/// Why a value was ignored.
pub(super) type Why = &'static str;

/// Strip HTTP optional whitespace (SP, HTAB) around a value.
pub(super) fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A non-negative decimal integer, strictly: no sign, no fraction, no exponent, no blanks
/// inside; the reason names what is wrong so the counters say something useful.
pub(super) fn count(s: &str) -> Result<u64, Why> {
    let s = trim(s);
    if s.is_empty() {
        return Err("empty");
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits, so the one possible error is overflow.
        return s.parse().map_err(|_| "out of range");
    }
    Err(if s.starts_with('-') {
        "negative"
    } else if s.contains(['.', 'e', 'E']) && s.bytes().any(|b| b.is_ascii_digit()) {
        "not an integer"
    } else {
        "not a number"
    })
}

/// Which of several comma-joined figures counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pick {
    /// Limits and remainings: the lowest is the most restrictive.
    Min,
    /// Resets and delays: the latest is the most restrictive.
    Max,
}

impl Pick {
    /// Combine two figures.
    pub(super) fn of<T: Ord>(self, a: T, b: T) -> T {
        match self {
            Self::Min => a.min(b),
            Self::Max => a.max(b),
        }
    }
}

/// A comma-separated list of items (`"10, 10"`: a proxy folded two copies of a header into
/// one line, as HTTP allows for lists). Every item must parse; disagreeing items are
/// resolved most-restrictive-wins, like disagreeing dialects, so a folded `0` is never lost.
pub(super) fn each<T: Ord>(
    s: &str,
    pick: Pick,
    mut item: impl FnMut(&str) -> Result<T, Why>,
) -> Result<T, Why> {
    let mut out: Option<T> = None;
    for part in s.split(',') {
        let v = item(trim(part))?;
        out = Some(match out {
            Some(o) => pick.of(o, v),
            None => v,
        });
    }
    // `split` yields at least one part, so this is only reached for an item error above.
    out.ok_or("empty")
}

/// Comma-joined strict integers.
pub(super) fn counts(s: &str, pick: Pick) -> Result<u64, Why> {
    each(s, pick, count)
}

/// Delta-seconds as a duration, refused beyond the horizon.
pub(super) fn delta_secs(secs: u64) -> Result<Duration, Why> {
    within_horizon(Duration::from_secs(secs))
}

/// A duration, refused beyond the horizon.
pub(super) fn within_horizon(d: Duration) -> Result<Duration, Why> {
    if d > MAX_HORIZON {
        Err("too far in the future")
    } else {
        Ok(d)
    }
}

/// Time from `now` until `t`: zero when `t` has passed (a reset in the past already
/// happened), refused when `t` is more than the horizon away either way (a broken clock or
/// garbage, not information).
pub(super) fn until(now: SystemTime, t: SystemTime) -> Result<Duration, Why> {
    match t.duration_since(now) {
        Ok(d) => within_horizon(d),
        Err(e) if e.duration() > MAX_HORIZON => Err("too far in the past"),
        Err(_) => Ok(Duration::ZERO),
    }
}

/// A classic reset figure: delta-seconds below [`EPOCH_THRESHOLD_SECS`], else UNIX seconds.
pub(super) fn epoch_or_delta(v: u64, now: SystemTime) -> Result<Duration, Why> {
    if v < EPOCH_THRESHOLD_SECS {
        return delta_secs(v);
    }
    // `checked_add`: a u64 of seconds can overflow SystemTime, which `+` would panic on.
    let t = UNIX_EPOCH
        .checked_add(Duration::from_secs(v))
        .ok_or("out of range")?;
    until(now, t)
}

/// A structured-field bare item that must be a non-negative integer (IETF `q`, `r`, `t`,
/// `w`, and the policy suffix of a classic limit).
pub(super) fn sf_count(item: &sfv::BareItem) -> Result<u64, Why> {
    match item {
        sfv::BareItem::Integer(i) => u64::try_from(i64::from(*i)).map_err(|_| "negative"),
        sfv::BareItem::Decimal(_) => Err("not an integer"),
        _ => Err("not a number"),
    }
}

/// A structured-field window (`w`) in seconds: positive and within the horizon.
pub(super) fn sf_window(item: &sfv::BareItem) -> Result<Duration, Why> {
    match sf_count(item)? {
        0 => Err("zero window"),
        w => delta_secs(w),
    }
}

/// A parameter of a structured-field item or list member, by key.
pub(super) fn sf_param<'p>(params: &'p sfv::Parameters, key: &str) -> Option<&'p sfv::BareItem> {
    params
        .iter()
        .find_map(|(k, v)| (k.as_str() == key).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strict integers name what is wrong with a bad one.
    #[test]
    fn strict_counts() {
        let table: &[(&str, Result<u64, Why>)] = &[
            ("0", Ok(0)),
            ("250", Ok(250)),
            (" 42\t", Ok(42)),
            ("007", Ok(7)),
            ("18446744073709551615", Ok(u64::MAX)),
            ("99999999999999999999", Err("out of range")),
            ("", Err("empty")),
            ("  ", Err("empty")),
            ("-1", Err("negative")),
            ("-0", Err("negative")),
            ("1.5", Err("not an integer")),
            ("1e3", Err("not an integer")),
            ("+5", Err("not a number")),
            ("abc", Err("not a number")),
            ("1 2", Err("not a number")),
            ("٣", Err("not a number")),
        ];
        for (input, want) in table {
            assert_eq!(count(input), *want, "{input:?}");
        }
    }

    /// Folded duplicates agree or resolve most-restrictive; one bad item spoils the header.
    #[test]
    fn folded_lists() {
        assert_eq!(counts("10, 10", Pick::Min), Ok(10));
        assert_eq!(counts("10,3", Pick::Min), Ok(3));
        assert_eq!(counts("10, 3", Pick::Max), Ok(10));
        assert_eq!(counts("10,", Pick::Min), Err("empty"));
        assert_eq!(counts(",", Pick::Min), Err("empty"));
        assert_eq!(counts("10, x", Pick::Min), Err("not a number"));
    }

    /// Below about a year of seconds a reset is a delta, above it an epoch.
    #[test]
    fn epoch_vs_delta() {
        let now = UNIX_EPOCH + Duration::from_secs(1_718_236_000);
        assert_eq!(epoch_or_delta(0, now), Ok(Duration::ZERO));
        assert_eq!(epoch_or_delta(60, now), Ok(Duration::from_secs(60)));
        let last_delta = EPOCH_THRESHOLD_SECS - 1;
        assert_eq!(
            epoch_or_delta(last_delta, now),
            Ok(Duration::from_secs(last_delta))
        );
        assert_eq!(
            epoch_or_delta(1_718_236_800, now),
            Ok(Duration::from_secs(800))
        );
        // An epoch a minute ago: the reset already happened.
        assert_eq!(epoch_or_delta(1_718_235_940, now), Ok(Duration::ZERO));
        // The threshold itself is an epoch: 1971, far in the past.
        assert_eq!(
            epoch_or_delta(EPOCH_THRESHOLD_SECS, now),
            Err("too far in the past")
        );
        assert_eq!(
            epoch_or_delta(4_102_444_800, now),
            Err("too far in the future")
        );
        assert_eq!(epoch_or_delta(u64::MAX, now), Err("out of range"));
    }

    /// Moments more than the horizon away are refused, recent past ones are zero.
    #[test]
    fn horizon() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(until(now, now), Ok(Duration::ZERO));
        assert_eq!(until(now, now + MAX_HORIZON), Ok(MAX_HORIZON));
        assert!(until(now, now + MAX_HORIZON + Duration::from_secs(1)).is_err());
        assert_eq!(until(now, now - Duration::from_secs(5)), Ok(Duration::ZERO));
        assert!(until(now, now - MAX_HORIZON - Duration::from_secs(1)).is_err());
        assert!(delta_secs(u64::MAX).is_err());
    }
}
