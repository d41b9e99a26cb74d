//! Whole-response table tests of [`parse`]: every example of headers.md per dialect, merging
//! across dialects, bad input and size limits. Property tests live in `proptests.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn s(secs: u64) -> Option<Duration> {
    Some(Duration::from_secs(secs))
}

fn dim(
    dimension: &str,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_after: Option<Duration>,
    window: Option<Duration>,
    source: &str,
) -> DimensionObs {
    DimensionObs {
        dimension: dimension.into(),
        limit,
        remaining,
        reset_after,
        window,
        source: source.into(),
        refill: refill_of(source),
        resolution: if source.starts_with("x-ratelimit-") && source.contains("-requests")
            || source.contains("-tokens") && !source.starts_with("anthropic")
        {
            crate::feedback::MILLISECONDS
        } else {
            crate::feedback::SECONDS
        },
    }
}

/// The refill each dialect's headers promise, by the header that gave the figures.
fn refill_of(source: &str) -> Refill {
    if source.starts_with("anthropic-")
        || source.ends_with("-requests")
        || source.ends_with("-tokens")
    {
        Refill::Continuous
    } else if matches!(source, "ratelimit" | "ratelimit-policy") {
        Refill::Unstated
    } else {
        Refill::AtReset
    }
}

fn obs(dimensions: Vec<DimensionObs>) -> Observation {
    Observation {
        dimensions,
        ..Observation::default()
    }
}

/// Retry-After in its three forms (headers.md and RFC 9110), resolved against `now`.
#[test]
fn retry_after_examples() {
    let now = at(946_684_799 - 30);
    for v in [
        "30",
        "Fri, 31 Dec 1999 23:59:59 GMT",
        "Friday, 31-Dec-99 23:59:59 GMT",
        "Fri Dec 31 23:59:59 1999",
    ] {
        let o = parse([("Retry-After", v)], now);
        assert_eq!(o.retry_after, s(30), "{v}");
        assert!(o.dimensions.is_empty() && o.ignored.is_empty());
    }
    assert_eq!(parse([("retry-after", "120")], now).retry_after, s(120));
    // A date in the past means 0.
    let later = at(946_684_799 + 5);
    let o = parse([("Retry-After", "Fri, 31 Dec 1999 23:59:59 GMT")], later);
    assert_eq!(o.retry_after, s(0));
}

/// Classic X-RateLimit-* with an epoch reset, and the older drafts with a delta reset.
#[test]
fn classic_examples() {
    let now = at(1_718_236_000);
    let o = parse(
        [
            ("X-RateLimit-Limit", "1000"),
            ("X-RateLimit-Remaining", "250"),
            ("X-RateLimit-Reset", "1718236800"),
        ],
        now,
    );
    let want = dim(
        "requests",
        Some(1000),
        Some(250),
        s(800),
        None,
        "x-ratelimit-remaining",
    );
    assert_eq!(o, obs(vec![want]));

    let o = parse(
        [
            ("RateLimit-Limit", "100"),
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "30"),
        ],
        now,
    );
    let want = dim(
        "requests",
        Some(100),
        Some(0),
        s(30),
        None,
        "ratelimit-remaining",
    );
    assert_eq!(o, obs(vec![want]));
    assert!(o.remaining_zero());

    let o = parse([("X-Ratelimit-Limit", "3, 3;w=3600")], now);
    let want = dim(
        "requests",
        Some(3),
        None,
        None,
        s(3600),
        "x-ratelimit-limit",
    );
    assert_eq!(o, obs(vec![want]));
}

/// GitHub: epoch reset, used, and the resource name.
#[test]
fn github_example() {
    let o = parse(
        [
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-used", "5000"),
            ("x-ratelimit-reset", "1655120964"),
            ("x-ratelimit-resource", "core"),
        ],
        at(1_655_120_000),
    );
    let want = dim(
        "requests",
        Some(5000),
        Some(0),
        s(964),
        None,
        "x-ratelimit-remaining",
    );
    assert_eq!(o.dimensions, vec![want]);
    assert_eq!(o.upstream_resource.as_deref(), Some("core"));
    assert!(o.remaining_zero() && o.ignored.is_empty());
}

/// OpenAI's table of headers.md: two dimensions, Go-style resets.
#[test]
fn openai_example() {
    let o = parse(
        [
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ],
        at(0),
    );
    let r = "x-ratelimit-remaining-requests";
    let t = "x-ratelimit-remaining-tokens";
    assert_eq!(
        o,
        obs(vec![
            dim("requests", Some(60), Some(59), s(1), None, r),
            dim("tokens", Some(150_000), Some(149_984), s(360), None, t),
        ])
    );
    // -1 is "unknown": no figure, not counted; a 0 limit is unknown too.
    let o = parse(
        [
            ("x-ratelimit-limit-tokens", "-1"),
            ("x-ratelimit-remaining-tokens", "-1"),
            ("x-ratelimit-reset-tokens", "-1"),
            ("x-ratelimit-limit-requests", "0"),
            ("x-ratelimit-remaining-requests", "0"),
        ],
        at(0),
    );
    let want = dim(
        "requests",
        None,
        Some(0),
        None,
        None,
        "x-ratelimit-remaining-requests",
    );
    assert_eq!(o, obs(vec![want]));
}

/// Anthropic: four kinds, RFC 3339 resets, retry-after on 429.
#[test]
fn anthropic_example() {
    let now = at(1_761_393_600 - 60); // a minute before 2025-10-25T12:00:00Z
    let mut headers = vec![("retry-after", "12")];
    let kinds = ["requests", "tokens", "input-tokens", "output-tokens"];
    let names: Vec<[String; 3]> = kinds
        .iter()
        .map(|k| ["limit", "remaining", "reset"].map(|w| format!("anthropic-ratelimit-{k}-{w}")))
        .collect();
    for [l, r, t] in &names {
        headers.extend([
            (l.as_str(), "50"),
            (r.as_str(), "0"),
            (t.as_str(), "2025-10-25T12:00:00Z"),
        ]);
    }
    let o = parse(headers, now);
    assert_eq!(o.retry_after, s(12));
    let dims: Vec<_> = ["requests", "tokens", "input_tokens", "output_tokens"]
        .iter()
        .zip(&names)
        .map(|(d, [_, r, _])| dim(d, Some(50), Some(0), s(60), None, r))
        .collect();
    assert_eq!(o.dimensions, dims);
}

/// IETF: the headers.md example (a RateLimit naming no listed policy), then joined ones.
#[test]
fn ietf_examples() {
    let policy = r#""burst";q=100;w=60,"daily";q=1000;w=86400"#;
    let o = parse(
        [
            ("RateLimit-Policy", policy),
            ("RateLimit", r#""default";r=50;t=30"#),
        ],
        at(0),
    );
    assert_eq!(
        o,
        obs(vec![
            dim("requests", None, Some(50), s(30), None, "ratelimit"),
            dim("requests", Some(100), None, None, s(60), "ratelimit-policy"),
            dim(
                "requests",
                Some(1000),
                None,
                None,
                s(86400),
                "ratelimit-policy"
            ),
        ])
    );
    // Joined by name, in either order; the two policies stay apart (different windows).
    let o = parse(
        [
            ("ratelimit", r#""burst";r=0;t=30, "daily";r=900;t=80000"#),
            ("ratelimit-policy", policy),
        ],
        at(0),
    );
    assert_eq!(
        o.dimensions,
        vec![
            dim("requests", Some(100), Some(0), s(30), s(60), "ratelimit"),
            dim(
                "requests",
                Some(1000),
                Some(900),
                s(80000),
                s(86400),
                "ratelimit"
            ),
        ]
    );
    let o = parse(
        [
            (
                "RateLimit-Policy",
                r#""b";q=1000;qu="content-bytes";w=1, "c";q=10;qu="concurrent-requests""#,
            ),
            ("RateLimit", r#""b";r=10"#),
        ],
        at(0),
    );
    assert_eq!(
        o.dimensions,
        vec![
            dim(
                "content_bytes",
                Some(1000),
                Some(10),
                None,
                s(1),
                "ratelimit"
            ),
            dim(
                "concurrent_requests",
                Some(10),
                None,
                None,
                None,
                "ratelimit-policy"
            ),
        ]
    );
}

/// Dialects describing the same dimension merge most-restrictive-wins; case variants of a
/// header do too; names are case-insensitive.
#[test]
fn merging() {
    let o = parse(
        [
            ("X-RATELIMIT-LIMIT", "100"),
            ("X-RateLimit-Remaining", "10"),
            ("x-ratelimit-remaining", "12"),
            ("X-RateLimit-Reset", "5"),
            ("RateLimit-Limit", "60"),
            ("RateLimit-Remaining", "3"),
            ("RateLimit-Reset", "2"),
            ("RateLimit", r#""x";r=7;t=9"#),
        ],
        at(0),
    );
    let want = dim(
        "requests",
        Some(60),
        Some(3),
        s(9),
        None,
        "ratelimit-remaining",
    );
    assert_eq!(o, obs(vec![want]));
    // Two Retry-After (case variants): the later.
    let o = parse([("Retry-After", "5"), ("RETRY-AFTER", "9")], at(0));
    assert_eq!(o.retry_after, s(9));
}

/// Bad values are ignored and listed with a reason, never a panic, negative or error.
#[test]
fn bad_values_are_counted() {
    let now = at(1_718_236_000);
    let table: &[(&str, &str, &str)] = &[
        ("x-ratelimit-remaining", "-1", "negative"),
        (
            "x-ratelimit-remaining",
            "99999999999999999999",
            "out of range",
        ),
        ("x-ratelimit-remaining", "", "empty"),
        ("x-ratelimit-remaining", "1.5", "not an integer"),
        ("x-ratelimit-remaining", "lots", "not a number"),
        ("x-ratelimit-limit", "10, 10;w=x", "not a number"),
        ("x-ratelimit-reset", "4102444800", "too far in the future"),
        ("x-ratelimit-reset", "1000000000", "too far in the past"),
        ("x-ratelimit-resource", "core search", "not a resource name"),
        ("ratelimit-reset", "-30", "negative"),
        ("retry-after", "-1", "negative"),
        ("retry-after", "tomorrow", "not an HTTP-date"),
        (
            "retry-after",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "too far in the future",
        ),
        ("x-ratelimit-reset-tokens", "-1s", "negative"),
        ("x-ratelimit-reset-tokens", "6 minutes", "not a duration"),
        ("x-ratelimit-limit-tokens", "-2", "negative"),
        (
            "anthropic-ratelimit-tokens-reset",
            "yesterday",
            "not an RFC 3339 timestamp",
        ),
        (
            "anthropic-ratelimit-tokens-reset",
            "1970-01-02T00:00:00Z",
            "too far in the past",
        ),
        ("anthropic-ratelimit-tokens-limit", "1e6", "not an integer"),
        ("ratelimit-policy", "\"p\";q=", "malformed structured field"),
        ("ratelimit", "", "empty"),
        ("ratelimit", r#""p";r=1.5"#, "not an integer"),
    ];
    for &(name, value, why) in table {
        let o = parse([(name, value)], now);
        assert!(
            o.dimensions.is_empty() && o.retry_after.is_none(),
            "{name}: {value}"
        );
        assert_eq!(o.ignored, vec![(name.to_owned(), why)], "{name}: {value}");
    }
}

/// Over-size values are refused unread; unknown and over-long names are skipped uncounted.
#[test]
fn size_limits() {
    let big = "9".repeat(1 << 20);
    let o = parse([("X-RateLimit-Remaining", big.as_str())], at(0));
    assert_eq!(
        o.ignored,
        vec![("x-ratelimit-remaining".into(), "value over 4 KiB")]
    );
    let edge = format!("{}1", " ".repeat(MAX_VALUE_LEN - 1));
    assert_eq!(
        parse([("ratelimit-remaining", edge.as_str())], at(0))
            .dimensions
            .len(),
        1
    );
    let long_name = "x".repeat(10_000);
    let o = parse(
        [
            (long_name.as_str(), "1"),
            ("content-type", "text/plain"),
            ("x-ratelimit-foo", "1"),
            ("", ""),
            ("ümlaut", "1"),
        ],
        at(0),
    );
    assert_eq!(o, Observation::default());
}

/// Thousands of headers: linear work, bounded output.
#[test]
fn thousands_of_headers() {
    let mut headers: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("x-noise-{i}"), "x".repeat(100)))
        .collect();
    headers.extend((0..5_000).map(|i| ("X-RateLimit-Remaining".into(), format!("-{i}"))));
    headers.extend((0..5_000).map(|i| ("x-ratelimit-remaining".into(), format!("{}", i + 1))));
    let o = parse(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), at(0));
    assert_eq!(o.ignored.len(), 5_000);
    assert_eq!(o.dimensions.len(), 1);
    assert_eq!(o.dimensions[0].remaining, Some(1));
}

/// A hostile upstream can't grow the observation past MAX_DIMENSIONS entries.
#[test]
fn dimensions_are_bounded() {
    let policies: Vec<String> = (1..=32).map(|w| format!("\"p{w}\";q=5;w={w}")).collect();
    let policies = policies.join(", ");
    let o = parse(
        [
            ("ratelimit-policy", policies.as_str()),
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-remaining-tokens", "1"),
            ("anthropic-ratelimit-input-tokens-remaining", "1"),
        ],
        at(0),
    );
    assert_eq!(o.dimensions.len(), MAX_DIMENSIONS);
    assert_eq!(o.ignored.len(), 3);
    assert!(
        o.ignored
            .iter()
            .all(|(_, why)| *why == "too many dimensions")
    );
}
