//! Principals as configured (`[[auth.principals]]` and the principals file), and the
//! identity a client certificate carries.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use super::{Role, tenant, token};

/// Which tenants a principal acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// One tenant.
    One(String),
    /// Every tenant (`"*"`, operators): picks one per call with the tenant header.
    All,
}

/// One configured identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Shows in logs and metrics, never the token.
    pub name: String,
    /// The tenant (or every tenant).
    pub tenant: TenantScope,
    /// What it may do.
    pub role: Role,
    /// Ceiling on AcquirePermit.priority.
    pub max_priority: Option<i32>,
    /// SHA-256 of its bearer token.
    pub token_sha256: Option<[u8; 32]>,
    /// The client-certificate identity (URI SAN, else DNS SAN, else CN).
    pub cert_identity: Option<String>,
}

/// A principal that cannot be used, named by where it was written.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalsError {
    /// The principals file cannot be read.
    #[error("cannot read principals file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The principals file is not valid TOML of the expected shape.
    #[error("principals file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// Where: `auth.principals[2].role`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two principals share a credential.
    #[error("{what} of principal {principal:?} is also another principal's")]
    Duplicate {
        /// Which credential.
        what: &'static str,
        /// The second principal holding it.
        principal: String,
    },
}

/// A principal as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrincipal {
    name: Option<String>,
    tenant: Option<String>,
    role: Option<String>,
    token_sha256: Option<String>,
    cert_identity: Option<String>,
    max_priority: Option<i64>,
}

/// The principals file: `[[principals]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    principals: Vec<RawPrincipal>,
}

impl RawPrincipal {
    /// Validate, naming fields under `at` (`auth.principals[0]`).
    ///
    /// # Errors
    /// A field is missing or invalid.
    pub fn build(self, at: &str) -> Result<Principal, PrincipalsError> {
        let invalid = |f: &str, m: String| PrincipalsError::Invalid {
            field: format!("{at}.{f}"),
            message: m,
        };
        let name = self
            .name
            .ok_or_else(|| invalid("name", "is required".into()))?;
        super::check_principal_name(&name).map_err(|e| invalid("name", e.to_string()))?;
        let tenant = match self.tenant.as_deref() {
            None => return Err(invalid("tenant", "is required (a tenant, or \"*\")".into())),
            Some("*") => TenantScope::All,
            Some(t) => {
                tenant::check_tenant(t).map_err(|e| invalid("tenant", e.to_string()))?;
                TenantScope::One(t.to_owned())
            }
        };
        let role = match self.role.as_deref() {
            None => {
                return Err(invalid(
                    "role",
                    "is required (admin, worker, viewer)".into(),
                ));
            }
            Some(r) => Role::parse(r).ok_or_else(|| {
                invalid("role", format!("{r:?} is not one of admin, worker, viewer"))
            })?,
        };
        let token_sha256 = self
            .token_sha256
            .map(|h| {
                token::parse_hex(&h.to_ascii_lowercase()).ok_or_else(|| {
                    invalid(
                        "token_sha256",
                        "must be 64 hex digits (the SHA-256 of the token; `permitd token new` prints it)"
                            .into(),
                    )
                })
            })
            .transpose()?;
        let cert_identity = self
            .cert_identity
            .map(|c| {
                if c.is_empty() || c.len() > 1024 || c.chars().any(char::is_control) {
                    Err(invalid(
                        "cert_identity",
                        "must be 1-1024 bytes without control characters".into(),
                    ))
                } else {
                    Ok(c)
                }
            })
            .transpose()?;
        if token_sha256.is_none() && cert_identity.is_none() {
            return Err(invalid(
                "token_sha256",
                "a principal needs token_sha256 or cert_identity".into(),
            ));
        }
        let max_priority = self
            .max_priority
            .map(|p| {
                i32::try_from(p)
                    .map_err(|_| invalid("max_priority", format!("{p} is out of range")))
            })
            .transpose()?;
        Ok(Principal {
            name,
            tenant,
            role,
            max_priority,
            token_sha256,
            cert_identity,
        })
    }
}

/// Read a principals file.
///
/// # Errors
/// It cannot be read or parsed, or a principal is invalid.
pub fn read_file(path: &Path) -> Result<Vec<Principal>, PrincipalsError> {
    let text = std::fs::read_to_string(path).map_err(|source| PrincipalsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw: RawFile = toml::from_str(&text).map_err(|source| PrincipalsError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let at = path.display().to_string();
    raw.principals
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.build(&format!("{at}: principals[{i}]")))
        .collect()
}

/// The `[[auth.principals]]` block of a minted token, after checking its fields as the
/// server will.
///
/// # Errors
/// A field is invalid.
pub fn block(
    name: &str,
    tenant: &str,
    role: &str,
    max_priority: Option<i32>,
    token_sha256: &str,
) -> Result<String, PrincipalsError> {
    RawPrincipal {
        name: Some(name.to_owned()),
        tenant: Some(tenant.to_owned()),
        role: Some(role.to_owned()),
        token_sha256: Some(token_sha256.to_owned()),
        cert_identity: None,
        max_priority: max_priority.map(i64::from),
    }
    .build("--")?;
    let mut out = format!(
        "[[auth.principals]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\ntoken_sha256 = \"{token_sha256}\"\n"
    );
    if let Some(p) = max_priority {
        out.push_str(&format!("max_priority = {p}\n"));
    }
    Ok(out)
}

/// The identity of a verified client certificate: its first URI SAN (SPIFFE ids), else its
/// first DNS SAN, else its subject's CN.
#[must_use]
pub fn cert_identity(leaf: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    if let Some(uri) = cert.valid_uri_names().next() {
        return Some(uri.to_owned());
    }
    if let Some(dns) = cert.valid_dns_names().next() {
        return Some(dns.to_owned());
    }
    common_name(cert.subject())
}

/// The CN of a DER `Name` (the contents of its SEQUENCE, as webpki hands it out): a walk
/// over SET { SEQUENCE { OID, value } } for OID 2.5.4.3.
#[must_use]
pub fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !name.is_empty() {
        let (tag, set, rest) = der(name)?;
        name = rest;
        if tag != 0x31 {
            return None;
        }
        let mut set = set;
        while !set.is_empty() {
            let (tag, atv, rest) = der(set)?;
            set = rest;
            if tag != 0x30 {
                return None;
            }
            let (tag, oid, value) = der(atv)?;
            if tag == 0x06 && oid == CN {
                let (_, v, _) = der(value)?;
                return std::str::from_utf8(v).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// One DER TLV: (tag, contents, what follows).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&len0, mut b) = b.split_first()?;
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (bytes, rest) = b.split_at(n);
        b = rest;
        bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x))
    };
    if b.len() < len {
        return None;
    }
    let (contents, rest) = b.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, tenant: &str, role: &str) -> RawPrincipal {
        RawPrincipal {
            name: Some(name.into()),
            tenant: Some(tenant.into()),
            role: Some(role.into()),
            token_sha256: Some(token::hex(&token::sha256(b"t"))),
            ..RawPrincipal::default()
        }
    }

    /// Every field is checked and named.
    #[test]
    fn fields_are_validated() {
        assert!(raw("a", "team-a", "worker").build("p").is_ok());
        assert_eq!(
            raw("a", "*", "admin").build("p").unwrap().tenant,
            TenantScope::All
        );
        let e = raw("a", "team a", "worker").build("p").unwrap_err();
        assert!(e.to_string().starts_with("p.tenant:"), "{e}");
        let e = raw("a", "t", "root").build("p").unwrap_err();
        assert!(e.to_string().starts_with("p.role:"), "{e}");
        let mut r = raw("a", "t", "viewer");
        r.token_sha256 = Some("abc".into());
        assert!(
            r.build("p")
                .unwrap_err()
                .to_string()
                .starts_with("p.token_sha256:")
        );
        let mut r = raw("a", "t", "viewer");
        r.token_sha256 = None;
        assert!(r.clone().build("p").is_err());
        r.cert_identity = Some("spiffe://corp/ns/etl/sa/worker".into());
        assert!(r.build("p").is_ok());
    }

    /// CN extraction from a hand-built Name: SET { SEQ { OID 2.5.4.3, UTF8String "w1" } }.
    #[test]
    fn common_name_of_subject() {
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'w', b'1',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("w1"));
        assert_eq!(common_name(&name[..5]), None);
        assert_eq!(common_name(&[]), None);
    }
}
