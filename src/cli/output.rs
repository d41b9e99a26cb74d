//! Formatting of the client's answers: durations and timestamps for people (humantime) and
//! for `--json` (the protobuf JSON forms `"1.500s"` and RFC 3339), hand-written JSON string
//! escaping (there is no `serde_json`), aligned tables, and writing to stdout without
//! panicking when the reader goes away (`permitd resources list | head`).
//!
//! A server's answer is never trusted to be in range: an absent value prints as `-` (or
//! `null`), and a timestamp humantime cannot format prints as raw seconds instead of
//! panicking.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

/// Seconds of 9999-12-31T23:59:59Z: humantime formats nothing later.
const MAX_RFC3339_SECONDS: i64 = 253_402_300_799;

/// Write `text` to stdout. A closed pipe ends the output quietly; other I/O errors are
/// returned.
pub(super) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A protobuf duration for people: `2s 500ms` (to the millisecond when at least 1 ms);
/// `-` when absent.
pub(super) fn duration(d: Option<&prost_types::Duration>) -> String {
    let Some(d) = d else {
        return "-".to_owned();
    };
    match Duration::try_from(*d) {
        Ok(d) if d >= Duration::from_millis(1) => {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            humantime::format_duration(Duration::from_millis(ms)).to_string()
        }
        Ok(d) => humantime::format_duration(d).to_string(),
        Err(_) => json_duration_text(d),
    }
}

/// A protobuf duration in its JSON form: `"1.500s"` (0, 3, 6 or 9 decimals); `null` when
/// absent.
pub(super) fn json_duration(d: Option<&prost_types::Duration>) -> String {
    d.map_or_else(
        || "null".to_owned(),
        |d| format!("\"{}\"", json_duration_text(d)),
    )
}

/// The text of a duration's JSON form, without quotes.
fn json_duration_text(d: &prost_types::Duration) -> String {
    let negative = d.seconds < 0 || d.nanos < 0;
    let secs = d.seconds.unsigned_abs();
    let nanos = d.nanos.unsigned_abs();
    let sign = if negative { "-" } else { "" };
    if nanos == 0 {
        format!("{sign}{secs}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{sign}{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{sign}{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{sign}{secs}.{nanos:09}s")
    }
}

/// A timestamp as RFC 3339 in UTC to the millisecond; `-` when absent.
pub(super) fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), timestamp_text)
}

/// A timestamp in its JSON form (quoted RFC 3339); `null` when absent.
pub(super) fn json_timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "null".to_owned(), |t| json_str(&timestamp_text(t)))
}

/// RFC 3339 when humantime can format it (1970 to 9999), raw epoch seconds otherwise.
fn timestamp_text(t: &prost_types::Timestamp) -> String {
    if (0..=MAX_RFC3339_SECONDS).contains(&t.seconds)
        && let Ok(at) = SystemTime::try_from(*t)
    {
        return humantime::format_rfc3339_millis(at).to_string();
    }
    format!("{}.{:09} seconds since the epoch", t.seconds, t.nanos)
}

/// Per-dimension amounts in name order for people: `requests=19, tokens=29000`; `-` when
/// empty.
pub(super) fn amounts(m: &HashMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    let sorted: BTreeMap<_, _> = m.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per-dimension amounts in name order as a JSON object.
pub(super) fn json_amounts(m: &HashMap<String, u64>) -> String {
    let sorted: BTreeMap<_, _> = m.iter().collect();
    let fields: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A JSON string literal: quoted, with `"`, `\` and control characters escaped.
pub(super) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The lower-case short name of a proto enum value (`DENIAL_REASON_RATE_LIMITED` ->
/// `rate_limited`); `unknown(N)` for a value this client does not know.
pub(super) fn enum_name(full: Option<&str>, prefix: &str, value: i32) -> String {
    match full {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => format!("unknown({value})"),
    }
}

/// Rows aligned in columns two spaces apart; the first row is the header.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON strings escape quotes, backslashes and control characters, and keep Unicode.
    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    /// Durations use the protobuf JSON form for `--json` and humantime for people.
    #[test]
    fn durations_in_both_forms() {
        let d = prost_types::Duration {
            seconds: 2,
            nanos: 500_000_000,
        };
        assert_eq!(json_duration(Some(&d)), "\"2.500s\"");
        assert_eq!(json_duration(None), "null");
        assert_eq!(duration(Some(&d)), "2s 500ms");
        let tiny = prost_types::Duration {
            seconds: 0,
            nanos: 1_500,
        };
        assert_eq!(json_duration(Some(&tiny)), "\"0.000001500s\"");
        assert_eq!(duration(Some(&tiny)), "1us 500ns");
    }

    /// Timestamps humantime cannot format print as seconds instead of panicking.
    #[test]
    fn out_of_range_timestamps_do_not_panic() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&t)), "2023-11-14T22:13:20.000Z");
        for seconds in [-1, i64::MAX] {
            let t = prost_types::Timestamp { seconds, nanos: 0 };
            assert!(timestamp(Some(&t)).contains("seconds since the epoch"));
        }
    }

    /// Table columns line up on the widest cell.
    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["A".to_owned(), "B".to_owned()],
            vec!["long".to_owned(), "x".to_owned()],
        ];
        assert_eq!(table(&rows), "A     B\nlong  x\n");
    }
}
