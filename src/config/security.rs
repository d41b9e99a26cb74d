//! The `[auth]` and `[tls]` sections, and the secure default: a listener off loopback
//! needs both, or `--insecure`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::auth::{self, Mode, principals::RawPrincipal};
use crate::tls::{self, ClientAuth};

/// The `[auth]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    mode: Option<String>,
    principals_file: Option<PathBuf>,
    #[serde(default)]
    principals: Vec<RawPrincipal>,
}

/// The `[tls]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth: Option<String>,
}

/// Command-line overrides of both sections.
#[derive(Debug, Clone, Default)]
pub struct SecurityOverrides {
    /// `--auth-mode`.
    pub auth_mode: Option<String>,
    /// `--principals-file`.
    pub principals_file: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca`.
    pub tls_client_ca: Option<PathBuf>,
    /// `--tls-client-auth`.
    pub tls_client_auth: Option<String>,
    /// `--insecure`: serve off loopback without auth or TLS.
    pub insecure: bool,
}

impl RawAuth {
    pub(crate) fn build(self, o: &SecurityOverrides) -> Result<auth::Settings, ConfigError> {
        let (mode_text, field) = match (&o.auth_mode, &self.mode) {
            (Some(m), _) => (Some(m.as_str()), "--auth-mode"),
            (None, m) => (m.as_deref(), "auth.mode"),
        };
        let mode = match mode_text {
            None => Mode::None,
            Some(m) => Mode::parse(m).ok_or_else(|| ConfigError::InvalidEnum {
                field: field.to_owned(),
                value: m.to_owned(),
                expected: "none, tokens, mtls, any",
            })?,
        };
        let principals = self
            .principals
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.build(&format!("auth.principals[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Conflict {
                field: "auth.principals".to_owned(),
                reason: e.to_string(),
            })?;
        Ok(auth::Settings {
            mode,
            principals,
            principals_file: o.principals_file.clone().or(self.principals_file),
        })
    }
}

impl RawTls {
    pub(crate) fn build(self, o: &SecurityOverrides) -> Result<Option<tls::Settings>, ConfigError> {
        let cert = o.tls_cert.clone().or(self.cert_file);
        let key = o.tls_key.clone().or(self.key_file);
        let ca = o.tls_client_ca.clone().or(self.client_ca_file);
        let client_auth = o.tls_client_auth.clone().or(self.client_auth);
        let (cert_file, key_file) = match (cert, key) {
            (None, None) => {
                if ca.is_some() || client_auth.is_some() {
                    return Err(ConfigError::Missing {
                        field: "tls.cert_file (client certificates need TLS)".to_owned(),
                    });
                }
                return Ok(None);
            }
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    field: "tls.key_file (tls.cert_file is set)".to_owned(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    field: "tls.cert_file (tls.key_file is set)".to_owned(),
                });
            }
            (Some(c), Some(k)) => (c, k),
        };
        let client_auth = match client_auth.as_deref() {
            None if ca.is_some() => ClientAuth::Required,
            None => ClientAuth::None,
            Some(v) => ClientAuth::parse(v).ok_or_else(|| ConfigError::InvalidEnum {
                field: "tls.client_auth".to_owned(),
                value: v.to_owned(),
                expected: "none, optional, required",
            })?,
        };
        if client_auth != ClientAuth::None && ca.is_none() {
            return Err(ConfigError::Missing {
                field: "tls.client_ca_file (tls.client_auth asks for client certificates)"
                    .to_owned(),
            });
        }
        Ok(Some(tls::Settings {
            cert_file,
            key_file,
            client_ca_file: ca,
            client_auth,
        }))
    }
}

/// Cross-section checks: certificate auth needs client certificates, and a listener off
/// loopback needs auth and TLS unless `insecure`.
pub(crate) fn check(
    auth: &auth::Settings,
    tls: Option<&tls::Settings>,
    listeners: &[(&str, Option<SocketAddr>)],
    insecure: bool,
) -> Result<(), ConfigError> {
    if matches!(auth.mode, Mode::Mtls | Mode::Any)
        && tls.is_none_or(|t| t.client_auth == ClientAuth::None)
    {
        return Err(ConfigError::Conflict {
            field: "auth.mode".to_owned(),
            reason: "mtls and any need client certificates: set tls.client_ca_file".to_owned(),
        });
    }
    if insecure {
        return Ok(());
    }
    let secured = auth.mode != Mode::None && tls.is_some();
    for (field, addr) in listeners {
        if let Some(a) = addr
            && !a.ip().is_loopback()
            && !secured
        {
            return Err(ConfigError::Conflict {
                field: (*field).to_owned(),
                reason: format!(
                    "{a} is not a loopback address: serving it needs auth (auth.mode) and TLS \
                     ([tls] cert_file and key_file), or --insecure to serve it without"
                ),
            });
        }
    }
    Ok(())
}
