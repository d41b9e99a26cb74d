//! Who is calling, and what they may do: principals, roles and tenants
//! (`../shared/design/security.md`).
//!
//! One [`Auth`] authenticates every call once, at the edge ([`layer`] for gRPC, the same
//! function for HTTP), into an [`Caller`] that the handlers read from the request's
//! extensions. Handlers never see a credential. With mode `none` every caller is the admin
//! of tenant `default`: permitd as it was before auth.

pub mod layer;
pub mod principals;
pub mod tenant;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::CertificateDer;
use tonic::Status;

use crate::permits::PermitError;
use crate::permits::resource::check_name;
pub use principals::{Principal, PrincipalsError, TenantScope};

/// Metadata (and HTTP header) an operator principal (tenant `*`) names the tenant it acts
/// for with; absent, it acts for `default`.
pub const TENANT_HEADER: &str = "x-permitd-tenant";

/// What a principal may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read quotas, resources, Watch, metrics, the dashboard.
    Viewer,
    /// Also acquire and settle permits, report outcomes, use idempotency and the cache.
    Worker,
    /// Also define, delete and reset resources.
    Admin,
}

impl Role {
    /// The role's name in config and messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Worker => "worker",
            Self::Admin => "admin",
        }
    }

    /// Parse a role name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "worker" => Some(Self::Worker),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// How callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Nobody: every caller is the admin of tenant `default`.
    #[default]
    None,
    /// A bearer token.
    Tokens,
    /// A client certificate (mTLS).
    Mtls,
    /// Either (both, when both are presented, must name the same principal).
    Any,
}

impl Mode {
    /// Parse a mode name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "tokens" => Some(Self::Tokens),
            "mtls" => Some(Self::Mtls),
            "any" => Some(Self::Any),
            _ => None,
        }
    }

    fn tokens(self) -> bool {
        matches!(self, Self::Tokens | Self::Any)
    }

    fn certs(self) -> bool {
        matches!(self, Self::Mtls | Self::Any)
    }
}

/// The validated `[auth]` settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// How callers authenticate.
    pub mode: Mode,
    /// The principals written in the config file itself.
    pub principals: Vec<Principal>,
    /// A principals file, read at start and again on SIGHUP.
    pub principals_file: Option<PathBuf>,
}

/// An authenticated call: who, for which tenant, with what role. Cheap to clone behind
/// its `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's name (logs, never a secret).
    pub principal: Arc<str>,
    /// The tenant the call acts for.
    pub tenant: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// The highest AcquirePermit priority it may ask for.
    pub max_priority: Option<i32>,
    /// An operator principal (tenant `*`): also sees every tenant's metrics.
    pub operator: bool,
}

impl Caller {
    /// Every call when auth is off: the admin of tenant `default`.
    #[must_use]
    pub fn anonymous() -> Self {
        Self {
            principal: "anonymous".into(),
            tenant: tenant::DEFAULT_TENANT.into(),
            role: Role::Admin,
            max_priority: None,
            operator: true,
        }
    }

    /// PERMISSION_DENIED unless the caller's role is at least `role`; `what` names the call.
    ///
    /// # Errors
    /// The role is too low.
    pub fn require(&self, role: Role, what: &str) -> Result<(), Status> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "role {} cannot {what} (needs {})",
                self.role.name(),
                role.name()
            )))
        }
    }

    /// PERMISSION_DENIED unless the caller is an operator (tenant `*`, or auth off): for
    /// server-wide figures that would show other tenants' counts.
    ///
    /// # Errors
    /// A tenant principal.
    pub fn require_operator(&self, what: &str) -> Result<(), Status> {
        if self.operator {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{what} is server-wide: only an operator principal (tenant \"*\") may read it"
            )))
        }
    }

    /// PERMISSION_DENIED when `priority` is above the principal's ceiling.
    ///
    /// # Errors
    /// The priority is above `max_priority`.
    pub fn check_priority(&self, priority: i32) -> Result<(), Status> {
        match self.max_priority {
            Some(max) if priority > max => Err(Status::permission_denied(format!(
                "priority {priority} is above principal {}'s max_priority {max}",
                self.principal
            ))),
            _ => Ok(()),
        }
    }

    /// Check `name` as the request field `field` and qualify it with the caller's tenant:
    /// the one way a request's name becomes a registry or store name.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming `field` when the name fails the checks.
    pub fn qualify<'a>(
        &self,
        name: &'a str,
        field: &str,
        max: usize,
    ) -> Result<std::borrow::Cow<'a, str>, PermitError> {
        crate::server::convert::name(name, field, true, max)?;
        Ok(tenant::qualify(&self.tenant, name))
    }

    /// Like [`Self::qualify`] for a prefix: may be empty.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming `field` when the prefix fails the checks.
    pub fn qualify_prefix(
        &self,
        prefix: &str,
        field: &str,
        max: usize,
    ) -> Result<String, PermitError> {
        crate::server::convert::name(prefix, field, false, max)?;
        Ok(tenant::qualify(&self.tenant, prefix).into_owned())
    }

    /// Whether a qualified name belongs to the caller's tenant.
    #[must_use]
    pub fn owns(&self, qualified: &str) -> bool {
        tenant::split(qualified).0 == &*self.tenant
    }

    /// A qualified name of the caller's tenant as the caller spells it.
    #[must_use]
    pub fn local<'a>(&self, qualified: &'a str) -> &'a str {
        tenant::split(qualified).1
    }
}

/// A principal and, for a one-tenant principal, the caller every call of it is (built
/// once, so a call costs no allocation).
#[derive(Debug)]
struct Entry {
    principal: Principal,
    caller: Option<Arc<Caller>>,
}

/// The principals in force, indexed by credential.
#[derive(Debug, Default)]
struct Table {
    by_token: HashMap<[u8; 32], Arc<Entry>>,
    by_cert: HashMap<String, Arc<Entry>>,
}

impl Table {
    fn new(principals: impl IntoIterator<Item = Principal>) -> Result<Self, PrincipalsError> {
        let mut t = Self::default();
        for principal in principals {
            let caller = match &principal.tenant {
                TenantScope::One(tenant) => Some(Arc::new(Caller {
                    principal: principal.name.as_str().into(),
                    tenant: tenant.as_str().into(),
                    role: principal.role,
                    max_priority: principal.max_priority,
                    operator: false,
                })),
                TenantScope::All => None,
            };
            let p = Arc::new(Entry { principal, caller });
            if let Some(h) = p.principal.token_sha256
                && t.by_token.insert(h, Arc::clone(&p)).is_some()
            {
                return Err(PrincipalsError::Duplicate {
                    what: "token_sha256",
                    principal: p.principal.name.clone(),
                });
            }
            if let Some(id) = &p.principal.cert_identity
                && t.by_cert.insert(id.clone(), Arc::clone(&p)).is_some()
            {
                return Err(PrincipalsError::Duplicate {
                    what: "cert_identity",
                    principal: p.principal.name.clone(),
                });
            }
        }
        Ok(t)
    }
}

/// The authenticator: the mode and the principals in force (replaced whole on reload).
#[derive(Debug)]
pub struct Auth {
    settings: Settings,
    table: RwLock<Arc<Table>>,
    anonymous: Arc<Caller>,
}

impl Auth {
    /// Read the principals (the config's and the file's) into an authenticator.
    ///
    /// # Errors
    /// The file cannot be read or a principal is invalid or duplicated.
    pub fn new(settings: Settings) -> Result<Self, PrincipalsError> {
        let table = Self::load(&settings)?;
        Ok(Self {
            settings,
            table: RwLock::new(Arc::new(table)),
            anonymous: Arc::new(Caller::anonymous()),
        })
    }

    /// No authentication: every caller is the admin of tenant `default`.
    #[must_use]
    pub fn off() -> Self {
        Self {
            settings: Settings::default(),
            table: RwLock::default(),
            anonymous: Arc::new(Caller::anonymous()),
        }
    }

    fn load(settings: &Settings) -> Result<Table, PrincipalsError> {
        let mut all = settings.principals.clone();
        if let Some(path) = &settings.principals_file {
            all.extend(principals::read_file(path)?);
        }
        Table::new(all)
    }

    /// The mode in force.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// Re-read the principals file (SIGHUP). On error the principals in force stay.
    ///
    /// # Errors
    /// The file cannot be read or a principal is invalid.
    pub fn reload(&self) -> Result<usize, PrincipalsError> {
        let table = Self::load(&self.settings)?;
        let n = table.by_token.len() + table.by_cert.len();
        if let Ok(mut t) = self.table.write() {
            *t = Arc::new(table);
        }
        Ok(n)
    }

    fn table(&self) -> Arc<Table> {
        // A poisoned lock only means a reload panicked midway: the old table is whole.
        match self.table.read() {
            Ok(t) => Arc::clone(&t),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Authenticate one call from its `authorization` and [`TENANT_HEADER`] values and the
    /// client certificate chain the TLS handshake verified.
    ///
    /// # Errors
    /// UNAUTHENTICATED (no, malformed or unknown credential; disagreeing credentials) or
    /// PERMISSION_DENIED (a tenant principal naming another tenant). Messages never echo a
    /// token.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        tenant_header: Option<&[u8]>,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Arc<Caller>, Status> {
        let mode = self.settings.mode;
        if mode == Mode::None {
            return Ok(Arc::clone(&self.anonymous));
        }
        let table = self.table();
        let by_token = match authorization.filter(|_| mode.tokens()) {
            Some(v) => {
                let token = bearer(v).ok_or_else(|| {
                    Status::unauthenticated("authorization: expected \"Bearer <token>\"")
                })?;
                let p = table
                    .by_token
                    .get(&token::sha256(token))
                    .ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
                Some(Arc::clone(p))
            }
            None => None,
        };
        let by_cert = match certs.and_then(<[_]>::first).filter(|_| mode.certs()) {
            Some(leaf) => {
                let id = principals::cert_identity(leaf).ok_or_else(|| {
                    Status::unauthenticated("client certificate has no URI SAN, DNS SAN or CN")
                })?;
                let p = table.by_cert.get(&id).ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "client certificate identity {id:?} is not a known principal"
                    ))
                })?;
                Some(Arc::clone(p))
            }
            None => None,
        };
        let entry = match (by_token, by_cert) {
            (Some(a), Some(b)) if !Arc::ptr_eq(&a, &b) => {
                return Err(Status::unauthenticated(
                    "the bearer token and the client certificate name different principals",
                ));
            }
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => {
                return Err(Status::unauthenticated(match mode {
                    Mode::Tokens => "no credentials: send \"authorization: Bearer <token>\"",
                    Mode::Mtls => "no credentials: present a client certificate",
                    _ => {
                        "no credentials: send \"authorization: Bearer <token>\" or present a client certificate"
                    }
                }));
            }
        };
        let asked = tenant_header
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .filter(|t| tenant::check_tenant(t).is_ok())
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "{TENANT_HEADER}: not a tenant name ([A-Za-z0-9._:/@-], 1-64 bytes)"
                        ))
                    })
            })
            .transpose()?;
        let principal = &entry.principal;
        let tenant: Arc<str> = match (&principal.tenant, asked) {
            (TenantScope::All, Some(t)) => t.into(),
            (TenantScope::All, None) => tenant::DEFAULT_TENANT.into(),
            (TenantScope::One(t), Some(a)) if a != t => {
                return Err(Status::permission_denied(format!(
                    "principal {} acts only for its own tenant",
                    principal.name
                )));
            }
            (TenantScope::One(_), _) => {
                if let Some(c) = &entry.caller {
                    return Ok(Arc::clone(c));
                }
                return Err(Status::internal("principal table is inconsistent"));
            }
        };
        Ok(Arc::new(Caller {
            principal: principal.name.as_str().into(),
            tenant,
            role: principal.role,
            max_priority: principal.max_priority,
            operator: true,
        }))
    }
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (rest.first().is_some_and(u8::is_ascii_whitespace) && !token.is_empty()).then_some(token)
}

/// The caller everyone is when auth is off.
static ANONYMOUS: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(Caller::anonymous);

/// A handler's caller: the anonymous admin (auth off: no per-call allocation or shared
/// counter), or the principal [`layer`] authenticated.
#[derive(Debug, Clone)]
pub enum CallerRef {
    /// Auth is off.
    Anonymous(&'static Caller),
    /// Authenticated by the layer.
    Authenticated(Arc<Caller>),
}

impl std::ops::Deref for CallerRef {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        match self {
            Self::Anonymous(c) => c,
            Self::Authenticated(c) => c,
        }
    }
}

impl Auth {
    /// The caller of a gRPC request, as [`layer`] put it there.
    ///
    /// # Errors
    /// UNAUTHENTICATED when auth is on and the request did not pass through the layer
    /// (fail closed).
    pub fn caller<T>(&self, req: &tonic::Request<T>) -> Result<CallerRef, Status> {
        if self.settings.mode == Mode::None {
            return Ok(CallerRef::Anonymous(&ANONYMOUS));
        }
        req.extensions()
            .get::<Arc<Caller>>()
            .cloned()
            .map(CallerRef::Authenticated)
            .ok_or_else(|| Status::unauthenticated("not authenticated"))
    }
}

/// Check a principal's name: the name alphabet.
pub(crate) fn check_principal_name(name: &str) -> Result<(), crate::permits::resource::NameError> {
    check_name(name, true, 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(tenant: &str, token: &str) -> Principal {
        Principal {
            name: format!("{tenant}-worker"),
            tenant: TenantScope::One(tenant.to_owned()),
            role: Role::Worker,
            max_priority: Some(5),
            token_sha256: Some(token::sha256(token.as_bytes())),
            cert_identity: None,
        }
    }

    fn auth(principals: Vec<Principal>) -> Auth {
        Auth::new(Settings {
            mode: Mode::Tokens,
            principals,
            principals_file: None,
        })
        .unwrap()
    }

    /// A known token becomes its principal's caller; unknown, malformed or missing
    /// credentials are UNAUTHENTICATED without echoing the token.
    #[test]
    fn tokens_authenticate() {
        let a = auth(vec![worker("team-a", "pmt_aaa")]);
        let c = a.authenticate(Some(b"Bearer pmt_aaa"), None, None).unwrap();
        assert_eq!(&*c.tenant, "team-a");
        assert_eq!(c.role, Role::Worker);
        assert!(!c.operator);
        let c = a
            .authenticate(Some(b"bearer   pmt_aaa "), None, None)
            .unwrap();
        assert_eq!(&*c.principal, "team-a-worker");
        for bad in [
            &b"Bearer pmt_bbb"[..],
            b"Basic pmt_aaa",
            b"Bearerpmt_aaa",
            b"Bearer ",
        ] {
            let e = a.authenticate(Some(bad), None, None).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(!e.message().contains("pmt_"), "{}", e.message());
        }
        let e = a.authenticate(None, None, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    /// A tenant principal cannot act for another tenant; an operator picks one.
    #[test]
    fn tenant_header() {
        let mut op = worker("x", "pmt_op");
        op.tenant = TenantScope::All;
        let a = auth(vec![worker("team-a", "pmt_aaa"), op]);
        let e = a
            .authenticate(Some(b"Bearer pmt_aaa"), Some(b"team-b"), None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            a.authenticate(Some(b"Bearer pmt_aaa"), Some(b"team-a"), None)
                .is_ok()
        );
        let c = a
            .authenticate(Some(b"Bearer pmt_op"), Some(b"team-b"), None)
            .unwrap();
        assert_eq!((&*c.tenant, c.operator), ("team-b", true));
        let c = a.authenticate(Some(b"Bearer pmt_op"), None, None).unwrap();
        assert_eq!(&*c.tenant, "default");
        let e = a
            .authenticate(Some(b"Bearer pmt_op"), Some(b"a|b"), None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    /// Roles and the priority ceiling.
    #[test]
    fn roles_and_priority() {
        let a = auth(vec![worker("team-a", "pmt_aaa")]);
        let c = a.authenticate(Some(b"Bearer pmt_aaa"), None, None).unwrap();
        assert!(c.require(Role::Worker, "AcquirePermit").is_ok());
        let e = c.require(Role::Admin, "PutResource").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(e.message(), "role worker cannot PutResource (needs admin)");
        assert!(c.check_priority(5).is_ok());
        assert_eq!(
            c.check_priority(6).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    /// Two principals with one token are refused: which one would a call be?
    #[test]
    fn duplicate_tokens_refused() {
        let e = Auth::new(Settings {
            mode: Mode::Tokens,
            principals: vec![worker("a", "pmt_x"), worker("b", "pmt_x")],
            principals_file: None,
        })
        .unwrap_err();
        assert!(matches!(e, PrincipalsError::Duplicate { .. }), "{e}");
    }

    /// Auth off: everyone is the default tenant's admin.
    #[test]
    fn off_is_anonymous_admin() {
        let c = Auth::off().authenticate(None, None, None).unwrap();
        assert_eq!(*c, Caller::anonymous());
    }
}
