//! The `[idempotency]` and `[cache]` sections: TTL defaults, size caps, the cache's byte
//! budget and the expiry sweeper's pace, validated into the domain modules' `Settings`.
//! Every error names its field (`idempotency.lock_ttl: ...`).

use std::time::Duration;

use serde::Deserialize;

use super::resources::parse_duration;
use super::{ConfigError, in_range};
use crate::{cache, idempotency};

/// Largest accepted result or value cap (64 MiB).
const MAX_CAP_BYTES: u64 = 64 * 1024 * 1024;
/// Largest accepted cache budget (1 TiB).
const MAX_BUDGET_BYTES: u64 = 1 << 40;
/// Sweeper interval bounds.
const SWEEP_INTERVAL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(3600));
/// Largest sweep batch.
const MAX_SWEEP_BATCH: u64 = 100_000;

/// The `[idempotency]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdempotency {
    ttl: Option<String>,
    lock_ttl: Option<String>,
    max_result_bytes: Option<i64>,
    sweep_interval: Option<String>,
    sweep_batch: Option<i64>,
}

/// The `[cache]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    default_ttl: Option<String>,
    max_value_bytes: Option<i64>,
    max_total_bytes: Option<i64>,
    sweep_interval: Option<String>,
    sweep_batch: Option<i64>,
}

/// A duration field within `[min, max]`, or `default` when absent.
fn duration(
    field: &str,
    value: Option<&str>,
    (min, max): (Duration, Duration),
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let d = parse_duration(field, v)?;
    if d < min || d > max {
        return Err(ConfigError::OutOfRange {
            field: field.to_owned(),
            value: format!("\"{v}\""),
            range: format!(
                "{} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
    Ok(d)
}

/// An integer field within `[min, max]`, or `default` when absent.
fn number(
    field: &str,
    value: Option<i64>,
    min: u64,
    max: u64,
    default: u64,
) -> Result<u64, ConfigError> {
    value.map_or(Ok(default), |n| in_range(field, n, min, max))
}

/// `u64` -> `usize`, saturating (values were bounded to fit before).
fn size(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl RawIdempotency {
    /// Validates the section.
    pub(crate) fn build(self) -> Result<idempotency::Settings, ConfigError> {
        let d = idempotency::Settings::default();
        let ttl = duration(
            "idempotency.ttl",
            self.ttl.as_deref(),
            (idempotency::MIN_TTL, idempotency::MAX_TTL),
            d.ttl,
        )?;
        let lock_ttl = duration(
            "idempotency.lock_ttl",
            self.lock_ttl.as_deref(),
            (idempotency::MIN_TTL, idempotency::MAX_LOCK_TTL.min(ttl)),
            d.lock_ttl.min(ttl),
        )?;
        let max_result_bytes = number(
            "idempotency.max_result_bytes",
            self.max_result_bytes,
            1024,
            MAX_CAP_BYTES,
            d.max_result_bytes as u64,
        )?;
        Ok(idempotency::Settings {
            ttl,
            lock_ttl,
            max_result_bytes: size(max_result_bytes),
            sweep_interval: duration(
                "idempotency.sweep_interval",
                self.sweep_interval.as_deref(),
                SWEEP_INTERVAL,
                d.sweep_interval,
            )?,
            sweep_batch: size(number(
                "idempotency.sweep_batch",
                self.sweep_batch,
                1,
                MAX_SWEEP_BATCH,
                d.sweep_batch as u64,
            )?),
        })
    }
}

impl RawCache {
    /// Validates the section.
    pub(crate) fn build(self) -> Result<cache::Settings, ConfigError> {
        let d = cache::Settings::default();
        let max_value_bytes = number(
            "cache.max_value_bytes",
            self.max_value_bytes,
            1,
            MAX_CAP_BYTES,
            d.max_value_bytes as u64,
        )?;
        let max_total_bytes = number(
            "cache.max_total_bytes",
            self.max_total_bytes,
            max_value_bytes,
            MAX_BUDGET_BYTES,
            d.max_total_bytes.max(max_value_bytes),
        )?;
        Ok(cache::Settings {
            default_ttl: duration(
                "cache.default_ttl",
                self.default_ttl.as_deref(),
                (cache::MIN_TTL, cache::MAX_TTL),
                d.default_ttl,
            )?,
            max_value_bytes: size(max_value_bytes),
            max_total_bytes,
            sweep_interval: duration(
                "cache.sweep_interval",
                self.sweep_interval.as_deref(),
                SWEEP_INTERVAL,
                d.sweep_interval,
            )?,
            sweep_batch: size(number(
                "cache.sweep_batch",
                self.sweep_batch,
                1,
                MAX_SWEEP_BATCH,
                d.sweep_batch as u64,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use std::time::Duration;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml_str(text, Overrides::default()).map_err(|e| e.to_string())
    }

    /// Proves the documented defaults: 24 h / 60 s TTLs, 1 MiB caps, a 256 MiB budget,
    /// a 1 s sweep of 512.
    #[test]
    fn defaults() {
        let c = load("").unwrap();
        assert_eq!(c.idempotency.ttl, Duration::from_secs(86_400));
        assert_eq!(c.idempotency.lock_ttl, Duration::from_secs(60));
        assert_eq!(c.idempotency.max_result_bytes, 1 << 20);
        assert_eq!(c.cache.default_ttl, Duration::from_secs(3600));
        assert_eq!(c.cache.max_value_bytes, 1 << 20);
        assert_eq!(c.cache.max_total_bytes, 256 << 20);
        assert_eq!(c.cache.sweep_interval, Duration::from_secs(1));
        assert_eq!(c.idempotency.sweep_batch, 512);
    }

    /// Proves every key of both sections is read.
    #[test]
    fn sections_parse() {
        let c = load(
            "[idempotency]\nttl = \"2h\"\nlock_ttl = \"5s\"\nmax_result_bytes = 4096\n\
             sweep_interval = \"100ms\"\nsweep_batch = 10\n\
             [cache]\ndefault_ttl = \"10m\"\nmax_value_bytes = 100\nmax_total_bytes = 1000\n\
             sweep_interval = \"50ms\"\nsweep_batch = 7\n",
        )
        .unwrap();
        let i = &c.idempotency;
        assert_eq!(
            (i.ttl, i.lock_ttl),
            (Duration::from_secs(7200), Duration::from_secs(5))
        );
        assert_eq!((i.max_result_bytes, i.sweep_batch), (4096, 10));
        assert_eq!(i.sweep_interval, Duration::from_millis(100));
        let k = &c.cache;
        assert_eq!(k.default_ttl, Duration::from_secs(600));
        assert_eq!(
            (k.max_value_bytes, k.max_total_bytes, k.sweep_batch),
            (100, 1000, 7)
        );
        assert_eq!(k.sweep_interval, Duration::from_millis(50));
    }

    /// Proves a short record TTL also caps the default lock TTL.
    #[test]
    fn default_lock_ttl_is_capped_by_ttl() {
        let c = load("[idempotency]\nttl = \"10s\"\n").unwrap();
        assert_eq!(c.idempotency.lock_ttl, Duration::from_secs(10));
    }

    /// Proves bad values are refused, each error naming its field.
    #[test]
    fn bad_values_name_the_field() {
        let bad = [
            ("[idempotency]\nttl = \"0s\"", "idempotency.ttl: "),
            ("[idempotency]\nttl = \"31days\"", "idempotency.ttl: "),
            (
                "[idempotency]\nttl = \"1h\"\nlock_ttl = \"2h\"",
                "idempotency.lock_ttl: ",
            ),
            (
                "[idempotency]\nlock_ttl = \"soon\"",
                "idempotency.lock_ttl: invalid duration",
            ),
            (
                "[idempotency]\nmax_result_bytes = 10",
                "idempotency.max_result_bytes: 10",
            ),
            (
                "[idempotency]\nsweep_interval = \"1ms\"",
                "idempotency.sweep_interval: ",
            ),
            (
                "[idempotency]\nsweep_batch = 0",
                "idempotency.sweep_batch: 0",
            ),
            ("[cache]\ndefault_ttl = \"0s\"", "cache.default_ttl: "),
            ("[cache]\nmax_value_bytes = 0", "cache.max_value_bytes: 0"),
            (
                "[cache]\nmax_value_bytes = 100\nmax_total_bytes = 99",
                "cache.max_total_bytes: 99",
            ),
            ("[cache]\nmax_total_bytes = -1", "cache.max_total_bytes: -1"),
            ("[cache]\nsweep_batch = 100001", "cache.sweep_batch: "),
        ];
        for (text, want) in bad {
            let e = load(text).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        let e = load("[cache]\nbudget = 1\n").unwrap_err();
        assert!(e.starts_with("cannot parse"), "{e}");
    }
}
