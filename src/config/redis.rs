//! The `[redis]` section: the cluster backend. Absent (and no `--redis-url`): the embedded
//! default.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::resources::parse_duration;
use crate::cluster::{FailurePolicy, Settings};

/// Bounds of `redis.op_timeout`.
const OP_TIMEOUT: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(30));

/// The `[redis]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    url: Option<String>,
    prefix: Option<String>,
    op_timeout: Option<String>,
    failure_policy: Option<String>,
    fallback_share: Option<i64>,
}

impl RawRedis {
    /// Validates the section; `url` (from `--redis-url`) wins over the file's. `None`: no
    /// URL anywhere, the embedded default.
    pub(crate) fn build(self, url: Option<String>) -> Result<Option<Settings>, ConfigError> {
        let Some(url) = url.or(self.url).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        // One URL, or the comma-separated seed nodes of a Redis Cluster.
        for seed in url.split(',').map(str::trim) {
            if !(seed.starts_with("redis://") || seed.starts_with("unix://")) {
                return Err(ConfigError::InvalidEnum {
                    field: "redis.url".to_owned(),
                    value: crate::cluster::redact(seed),
                    expected: "redis://host:port[/db] or unix:// URLs, comma separated",
                });
            }
        }
        let d = Settings::default();
        let prefix = self.prefix.unwrap_or(d.prefix);
        if prefix.contains(['{', '}']) || prefix.len() > 64 {
            return Err(ConfigError::OutOfRange {
                field: "redis.prefix".to_owned(),
                value: format!("\"{prefix}\""),
                range: "at most 64 bytes, no braces".to_owned(),
            });
        }
        let op_timeout = match self.op_timeout {
            Some(v) => {
                let t = parse_duration("redis.op_timeout", &v)?;
                if t < OP_TIMEOUT.0 || t > OP_TIMEOUT.1 {
                    return Err(ConfigError::OutOfRange {
                        field: "redis.op_timeout".to_owned(),
                        value: format!("\"{v}\""),
                        range: "10ms to 30s".to_owned(),
                    });
                }
                t
            }
            None => d.op_timeout,
        };
        let policy = match self.failure_policy.as_deref() {
            None | Some("fail_closed") => FailurePolicy::FailClosed,
            Some("local_fallback") => FailurePolicy::LocalFallback,
            Some(v) => {
                return Err(ConfigError::InvalidEnum {
                    field: "redis.failure_policy".to_owned(),
                    value: v.to_owned(),
                    expected: "fail_closed, local_fallback",
                });
            }
        };
        let fallback_share = match self.fallback_share {
            Some(n) => {
                u32::try_from(super::in_range("redis.fallback_share", n, 1, 1000)?).unwrap_or(1)
            }
            None => d.fallback_share,
        };
        Ok(Some(Settings {
            url,
            prefix,
            op_timeout,
            policy,
            fallback_share,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::FailurePolicy;
    use crate::config::{Config, Overrides};

    #[test]
    fn absent_is_embedded_and_the_flag_wins() {
        let c = Config::from_toml_str("", Overrides::default()).expect("ok");
        assert!(c.redis.is_none());
        let c = Config::from_toml_str(
            "[redis]\nurl = \"redis://a:1\"\nfailure_policy = \"local_fallback\"\nfallback_share = 3\n",
            Overrides {
                redis_url: Some("redis://b:2/1".into()),
                ..Overrides::default()
            },
        )
        .expect("ok");
        let r = c.redis.expect("redis");
        assert_eq!(r.url, "redis://b:2/1");
        assert_eq!(r.policy, FailurePolicy::LocalFallback);
        assert_eq!(r.fallback_share, 3);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, field) in [
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            (
                "[redis]\nurl = \"redis://x\"\nop_timeout = \"1ms\"",
                "redis.op_timeout",
            ),
            (
                "[redis]\nurl = \"redis://x\"\nfailure_policy = \"maybe\"",
                "redis.failure_policy",
            ),
            (
                "[redis]\nurl = \"redis://x\"\nfallback_share = 0",
                "redis.fallback_share",
            ),
            (
                "[redis]\nurl = \"redis://x\"\nprefix = \"{x}\"",
                "redis.prefix",
            ),
        ] {
            let e = Config::from_toml_str(text, Overrides::default()).expect_err(text);
            assert!(e.to_string().starts_with(field), "{text}: {e}");
        }
    }
}
