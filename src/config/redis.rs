//! The `[redis]` section: the cluster backend. Absent (and no `--redis-url`): the embedded
//! default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::ConfigError;
use super::resources::parse_duration;
use crate::cluster::{FailurePolicy, Settings};
use crate::store::RedisTls;

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
    resync_interval: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl RawRedis {
    /// Validates the section; `url` (from `--redis-url`) wins over the file's. `None`: no
    /// URL anywhere, the embedded default.
    /// `tls_ca_file` (from `--redis-tls-ca-file`) wins over the file's too.
    pub(crate) fn build(
        self,
        url: Option<String>,
        tls_ca_file: Option<PathBuf>,
    ) -> Result<Option<Settings>, ConfigError> {
        let Some(url) = url.or(self.url).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        // One URL, or the comma-separated seed nodes of a Redis Cluster.
        let mut tls_seeds = 0;
        let seeds: Vec<&str> = url.split(',').map(str::trim).collect();
        for seed in &seeds {
            if seed.starts_with("rediss://") {
                tls_seeds += 1;
            } else if !(seed.starts_with("redis://") || seed.starts_with("unix://")) {
                return Err(ConfigError::InvalidEnum {
                    field: "redis.url".to_owned(),
                    value: crate::cluster::redact(seed),
                    expected: "redis://host:port[/db], rediss:// (TLS) or unix:// URLs, comma separated",
                });
            }
        }
        // A seed list is one cluster: its nodes all speak TLS or none does.
        if tls_seeds != 0 && tls_seeds != seeds.len() {
            return Err(ConfigError::Conflict {
                field: "redis.url".to_owned(),
                reason: format!(
                    "\"{}\" mixes rediss:// (TLS) and plaintext seed nodes",
                    crate::cluster::redact(&url)
                ),
            });
        }
        let tls = read_tls(
            tls_ca_file.or(self.tls_ca_file),
            self.tls_cert_file,
            self.tls_key_file,
        )?;
        if tls_seeds == 0 && tls != RedisTls::default() {
            // Certificates given for a plaintext URL: refuse rather than talk in the clear
            // to a Redis the operator meant to reach over TLS.
            let field = if tls.root_cert.is_some() {
                "redis.tls_ca_file"
            } else {
                "redis.tls_cert_file"
            };
            return Err(ConfigError::Conflict {
                field: field.to_owned(),
                reason: format!(
                    "TLS files need rediss:// URLs, not \"{}\"",
                    crate::cluster::redact(&url)
                ),
            });
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
        let resync_every = match self.resync_interval {
            Some(v) => {
                let t = parse_duration("redis.resync_interval", &v)?;
                if t < Duration::from_millis(100) || t > Duration::from_secs(3600) {
                    return Err(ConfigError::OutOfRange {
                        field: "redis.resync_interval".to_owned(),
                        value: format!("\"{v}\""),
                        range: "100ms to 1h".to_owned(),
                    });
                }
                t
            }
            None => d.resync_every,
        };
        Ok(Some(Settings {
            url,
            prefix,
            op_timeout,
            policy,
            fallback_share,
            resync_every,
            tls,
        }))
    }
}

/// Reads and checks the PEM files of `[redis]`: the CA must hold at least one certificate,
/// the client certificate and key come as a pair. Each error names its field and file.
fn read_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<RedisTls, ConfigError> {
    let root_cert = ca
        .map(|path| {
            let pem = read_pem("redis.tls_ca_file", &path)?;
            certificates("redis.tls_ca_file", &path, &pem)?;
            Ok::<_, ConfigError>(pem)
        })
        .transpose()?;
    let client_cert_key = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                field: "redis.tls_key_file (tls_cert_file is set)".to_owned(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                field: "redis.tls_cert_file (tls_key_file is set)".to_owned(),
            });
        }
        (Some(cert), Some(key)) => {
            let cert_pem = read_pem("redis.tls_cert_file", &cert)?;
            certificates("redis.tls_cert_file", &cert, &cert_pem)?;
            let key_pem = read_pem("redis.tls_key_file", &key)?;
            if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
                return Err(ConfigError::InvalidPem {
                    field: "redis.tls_key_file".to_owned(),
                    path: key,
                    expected: "a PEM private key",
                });
            }
            Some((cert_pem, key_pem))
        }
    };
    Ok(RedisTls {
        root_cert,
        client_cert_key,
    })
}

/// The bytes of a PEM file named by `field`.
fn read_pem(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// Checks that `pem` holds at least one certificate and nothing unparsable.
fn certificates(field: &str, path: &Path, pem: &[u8]) -> Result<(), ConfigError> {
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem) {
        if cert.is_err() {
            count = 0;
            break;
        }
        count += 1;
    }
    if count == 0 {
        return Err(ConfigError::InvalidPem {
            field: field.to_owned(),
            path: path.to_owned(),
            expected: "one or more PEM certificates",
        });
    }
    Ok(())
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

    /// A PEM block of the given label; the config checks the PEM framing, not the DER
    /// inside (rustls checks that when it connects).
    fn pem(label: &str) -> String {
        format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n")
    }

    #[test]
    fn rediss_urls_read_the_tls_files_and_the_flag_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let ca = file("ca.pem", &pem("CERTIFICATE"));
        let other_ca = file("other.pem", &format!("{0}{0}", pem("CERTIFICATE")));
        let cert = file("client.pem", &pem("CERTIFICATE"));
        let key = file("client.key", &pem("PRIVATE KEY"));
        let text = format!(
            "[redis]\nurl = \"rediss://a:1/,rediss://b:2/\"\ntls_ca_file = {ca:?}\n\
             tls_cert_file = {cert:?}\ntls_key_file = {key:?}\n"
        );
        let r = Config::from_toml_str(&text, Overrides::default())
            .expect("ok")
            .redis
            .expect("redis");
        assert_eq!(r.seeds(), ["rediss://a:1/", "rediss://b:2/"]);
        assert_eq!(r.tls.root_cert, Some(pem("CERTIFICATE").into_bytes()));
        assert_eq!(
            r.tls.client_cert_key,
            Some((
                pem("CERTIFICATE").into_bytes(),
                pem("PRIVATE KEY").into_bytes()
            ))
        );
        // The flag (or its env) wins over the file's CA; a rediss:// URL alone is fine.
        let c = Config::from_toml_str(
            &text,
            Overrides {
                redis_tls_ca_file: Some(other_ca.clone()),
                ..Overrides::default()
            },
        )
        .expect("ok");
        let expected = std::fs::read(&other_ca).expect("read");
        assert_eq!(c.redis.expect("redis").tls.root_cert, Some(expected));
        let c = Config::from_toml_str(
            "",
            Overrides {
                redis_url: Some("rediss://h:6380/".into()),
                ..Overrides::default()
            },
        )
        .expect("ok");
        assert_eq!(
            c.redis.expect("redis").tls,
            crate::store::RedisTls::default()
        );
    }

    #[test]
    fn bad_tls_settings_name_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, pem("CERTIFICATE")).expect("write");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").expect("write");
        let missing = dir.path().join("missing.pem");
        let tls = "url = \"rediss://h:1/\"";
        for (text, field, needle) in [
            (
                format!("{tls}\ntls_ca_file = {missing:?}"),
                "redis.tls_ca_file",
                "missing.pem",
            ),
            (
                format!("{tls}\ntls_ca_file = {junk:?}"),
                "redis.tls_ca_file",
                "junk.pem",
            ),
            (
                format!("{tls}\ntls_cert_file = {good:?}"),
                "redis.tls_key_file",
                "missing",
            ),
            (
                format!("{tls}\ntls_key_file = {good:?}"),
                "redis.tls_cert_file",
                "missing",
            ),
            (
                format!("{tls}\ntls_cert_file = {good:?}\ntls_key_file = {good:?}"),
                "redis.tls_key_file",
                "ca.pem",
            ),
            (
                format!("url = \"redis://h:1/\"\ntls_ca_file = {good:?}"),
                "redis.tls_ca_file",
                "rediss://",
            ),
            (
                "url = \"rediss://a:1/,redis://b:2/\"".to_owned(),
                "redis.url",
                "mixes rediss://",
            ),
        ] {
            let text = format!("[redis]\n{text}\n");
            let e = Config::from_toml_str(&text, Overrides::default()).expect_err(&text);
            let e = e.to_string();
            assert!(e.starts_with(field), "{text}: {e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
