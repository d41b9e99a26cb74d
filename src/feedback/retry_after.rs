//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
//!
//! HTTP-dates go to the `httpdate` crate, which reads all three forms RFC 9110 obliges a
//! recipient to accept (IMF-fixdate, RFC 850, asctime) and rejects anything else, so no
//! hand-written date grammar lives here.

use std::time::{Duration, SystemTime};

use super::value::{self, Pick, Why};

/// The header's lower-case name.
pub(super) const NAME: &str = "retry-after";

/// The delay a `Retry-After` value asks for, from `now`: zero for a past date (RFC 9110),
/// refused beyond the horizon.
pub(super) fn parse(v: &str, now: SystemTime) -> Result<Duration, Why> {
    let starts_with_letter = v.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if starts_with_letter {
        // Every HTTP-date form begins with a day name; delay-seconds never do.
        let t = httpdate::parse_http_date(v).map_err(|_| "not an HTTP-date")?;
        return value::until(now, t);
    }
    // Delay-seconds, possibly folded ("120, 120"): the longest wait is the safe one.
    // Fractions ("1.5") are refused: the grammar is `1*DIGIT` and guessing a rounding would
    // hide a broken upstream.
    value::delta_secs(value::counts(v, Pick::Max)?)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// 1999-12-31T23:59:59Z, the date of the RFC's example.
    const Y2K_EVE: u64 = 946_684_799;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The examples of headers.md and RFC 9110 in every form, plus bad input.
    #[test]
    fn table() {
        let now = at(Y2K_EVE - 120);
        let secs = |s| Ok(Duration::from_secs(s));
        let table: &[(&str, Result<Duration, Why>)] = &[
            ("120", secs(120)),
            ("12", secs(12)),
            ("0", secs(0)),
            ("120, 120", secs(120)),
            ("60, 120", secs(120)),
            // IMF-fixdate, RFC 850 and asctime of the same moment.
            ("Fri, 31 Dec 1999 23:59:59 GMT", secs(120)),
            ("Friday, 31-Dec-99 23:59:59 GMT", secs(120)),
            ("Fri Dec 31 23:59:59 1999", secs(120)),
            // A past date means "now".
            ("Fri, 31 Dec 1999 23:57:00 GMT", secs(0)),
            // Far past or future: garbage, not a year-long pause.
            ("Thu, 01 Jan 1970 00:00:00 GMT", Err("too far in the past")),
            (
                "Fri, 31 Dec 9999 23:59:59 GMT",
                Err("too far in the future"),
            ),
            ("99999999", Err("too far in the future")),
            ("99999999999999999999", Err("out of range")),
            ("-5", Err("negative")),
            ("1.5", Err("not an integer")),
            ("", Err("empty")),
            ("soon", Err("not an HTTP-date")),
            ("Fri, 31 Dec 1999 23:59:59 CET", Err("not an HTTP-date")),
            ("Fri, 32 Dec 1999 23:59:59 GMT", Err("not an HTTP-date")),
            ("120s", Err("not a number")),
        ];
        for (input, want) in table {
            assert_eq!(parse(input, now), *want, "{input:?}");
        }
    }
}
