//! Property tests of [`parse`]: total on arbitrary headers and `now`, sane output, exact
//! round trips of integers, Go durations and classic resets.

use std::time::Duration;

use proptest::prelude::*;

use super::tests::at;
use super::*;

/// Header names that parse, in random case.
fn known_name() -> impl Strategy<Value = String> {
    let names = [
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
        "x-ratelimit-resource",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-remaining-requests",
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
        "ratelimit-policy",
        "ratelimit",
    ];
    (proptest::sample::select(names.to_vec()), any::<u64>()).prop_map(|(n, mask)| {
        n.chars()
            .enumerate()
            .map(|(i, c)| {
                if (mask >> (i % 64)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

/// Values near the grammars: numbers, durations, dates, structured fields, garbage.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "-?[0-9]{0,22}(\\.[0-9]{0,3})?",
        "[0-9]{1,4}(h|m|s|ms|us|µs|ns|d|){1,3}[0-9.]{0,3}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "(Mon|Fri|Sunday), [0-9]{2}[ -](Nov|Dec)[ -][0-9]{2,4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "(\"[a-z]{0,3}\"|[a-z]{1,3}|[0-9]{1,16});[a-z]{1,2}=(-?[0-9]{1,17}|\"[a-z-]*\"|:[a-z]*:|\\?[01])(, ?[0-9]{1,3}(;w=-?[0-9]{1,5})?){0,3}",
        "[0-9 ,;=w-]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// parse never panics on arbitrary headers and `now`, and what it returns is sane:
    /// durations within the horizon, no zero limits, bounded entries, lower-case names.
    #[test]
    fn parse_is_total_and_sane(
        headers in proptest::collection::vec(
            (prop_oneof![3 => known_name(), 1 => any::<String>()], value()),
            0..24,
        ),
        now_secs in prop_oneof![Just(1_718_236_000u64), any::<u64>().prop_map(|s| s % 8_000_000_000)],
    ) {
        let now = at(now_secs);
        let o = parse(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), now);
        prop_assert!(o.retry_after.is_none_or(|d| d <= MAX_HORIZON));
        prop_assert!(o.dimensions.len() <= MAX_DIMENSIONS);
        for d in &o.dimensions {
            prop_assert!(d.limit != Some(0));
            prop_assert!(d.reset_after.is_none_or(|r| r <= MAX_HORIZON));
            prop_assert!(d.window.is_none_or(|w| w <= MAX_HORIZON && !w.is_zero()));
            prop_assert_eq!(&d.source, &d.source.to_ascii_lowercase());
        }
        for (name, _) in &o.ignored {
            prop_assert_eq!(name, &name.to_ascii_lowercase());
        }
    }

    /// Any integer round-trips through every integer-valued header.
    #[test]
    fn integers_round_trip(n in any::<u64>()) {
        let v = n.to_string();
        let o = parse([("X-RateLimit-Remaining", v.as_str()), ("anthropic-ratelimit-tokens-limit", v.as_str())], at(0));
        prop_assert_eq!(o.dimensions[0].remaining, Some(n));
        prop_assert_eq!(o.dimensions[1].limit, (n != 0).then_some(n));
    }

    /// Go durations as OpenAI writes them parse to their exact value.
    #[test]
    fn go_durations_exact(h in 0u64..100, m in 0u64..60, sec in 0u64..60, milli in 0u64..1000) {
        let v = format!("{h}h{m}m{sec}.{milli:03}s");
        let o = parse([("x-ratelimit-reset-tokens", v.as_str())], at(0));
        let want = Duration::from_millis(((h * 60 + m) * 60 + sec) * 1000 + milli);
        prop_assert_eq!(o.dimensions[0].reset_after, Some(want));
    }

    /// Classic resets: below the threshold a delta, above it an epoch against `now`.
    #[test]
    fn reset_epoch_or_delta(v in 0u64..4_000_000_000, now_secs in 1_000_000_000u64..2_000_000_000) {
        let text = v.to_string();
        let o = parse([("x-ratelimit-reset", text.as_str())], at(now_secs));
        let want = if v < value::EPOCH_THRESHOLD_SECS {
            Some(Duration::from_secs(v))
        } else {
            let d = v.abs_diff(now_secs);
            (d <= MAX_HORIZON.as_secs()).then(|| Duration::from_secs(v.saturating_sub(now_secs)))
        };
        prop_assert_eq!(o.dimensions.first().and_then(|d| d.reset_after), want);
    }
}
