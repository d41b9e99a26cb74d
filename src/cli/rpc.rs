//! The client's side of the wire: connecting to `--server` within `--timeout`, stamping each
//! request with its deadline, and turning a `tonic::Status` into the one-line
//! `CODE: message` that `main` prints (tonic's own `Display` is a debug dump).

use super::ConnArgs;
use anyhow::Context as _;
use std::fmt;
use std::time::Duration;
use tonic::Code;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A connection that presents the caller's credentials on every call.
pub(crate) type Conn = InterceptedService<Channel, Credentials>;

/// Adds `authorization: Bearer <token>` and the tenant header to every request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    authorization: Option<AsciiMetadataValue>,
    tenant: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.tenant {
            req.metadata_mut()
                .insert(permitd::auth::TENANT_HEADER, v.clone());
        }
        Ok(req)
    }
}

impl Credentials {
    fn of(conn: &ConnArgs) -> anyhow::Result<Self> {
        let authorization = conn
            .token
            .as_deref()
            .map(|t| {
                let mut v: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| anyhow::anyhow!("--token: not a printable ASCII token"))?;
                v.set_sensitive(true);
                anyhow::Ok(v)
            })
            .transpose()?;
        let tenant = conn
            .tenant
            .as_deref()
            .map(|t| {
                MetadataValue::try_from(t)
                    .map_err(|_| anyhow::anyhow!("--tenant: not a tenant name"))
            })
            .transpose()?;
        Ok(Self {
            authorization,
            tenant,
        })
    }
}

/// The TLS settings of `--tls-ca`, `--tls-cert` and `--tls-key`, for `host`.
fn tls_config(conn: &ConnArgs, host: &str) -> anyhow::Result<ClientTlsConfig> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("{flag}: cannot read {}", p.display()))
    };
    let mut tls = ClientTlsConfig::new().domain_name(host.to_owned());
    match &conn.tls_ca {
        Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
        None => {
            anyhow::bail!("https:// needs --tls-ca (the CA that signed the server's certificate)")
        }
    }
    match (&conn.tls_cert, &conn.tls_key) {
        (Some(c), Some(k)) => {
            tls = tls.identity(Identity::from_pem(
                read("--tls-cert", c)?,
                read("--tls-key", k)?,
            ));
        }
        (None, None) => {}
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
    Ok(tls)
}

/// A gRPC error answer, displayed as `CODE: message` (`NOT_FOUND: unknown resource "x"`).
#[derive(Debug)]
pub(super) struct RpcError {
    /// The status code.
    code: Code,
    /// The server's message (may be empty).
    message: String,
}

impl From<tonic::Status> for RpcError {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: status.code(),
            // One line, whatever the server sent.
            message: status.message().replace(['\r', '\n'], " "),
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = code_name(self.code);
        if self.message.is_empty() {
            f.write_str(name)
        } else {
            write!(f, "{name}: {}", self.message)
        }
    }
}

impl std::error::Error for RpcError {}

/// The canonical upper-case name of a gRPC code, as the gRPC spec and permitd's docs write
/// it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Connect to the server. `deadline` is how long each call may take once connected.
pub(crate) async fn connect(conn: &ConnArgs, deadline: Duration) -> anyhow::Result<Conn> {
    let tls_asked = conn.tls_ca.is_some() || conn.tls_cert.is_some();
    let url = if conn.server.contains("://") {
        conn.server.clone()
    } else if tls_asked {
        format!("https://{}", conn.server)
    } else {
        format!("http://{}", conn.server)
    };
    let credentials = Credentials::of(conn)?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("--server: invalid URL \"{}\"", conn.server))?
        .connect_timeout(conn.timeout)
        .timeout(deadline);
    if url.starts_with("https://") {
        let host = endpoint.uri().host().unwrap_or("localhost").to_owned();
        endpoint = endpoint
            .tls_config(tls_config(conn, &host)?)
            .context("--server: TLS settings")?;
    } else if tls_asked {
        anyhow::bail!("--tls-ca and --tls-cert need an https:// --server");
    }
    match tokio::time::timeout(conn.timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(InterceptedService::new(channel, credentials)),
        // tonic's chain repeats itself ("transport error: tcp connect error: tcp connect
        // error: Connection refused"); the root cause alone says what happened.
        Ok(Err(e)) => anyhow::bail!("cannot connect to {url}: {}", root_cause(&e)),
        Err(_) => anyhow::bail!(
            "cannot connect to {url}: no answer within {}",
            humantime::format_duration(conn.timeout)
        ),
    }
}

/// The innermost cause of an error, as text.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A request carrying `deadline` as its gRPC timeout, so the server knows it too (it never
/// queues a caller past its deadline).
pub(super) fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(deadline);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gRPC error prints as `CODE: message` on one line, or just `CODE` without a message.
    #[test]
    fn status_prints_as_code_and_message() {
        let e = RpcError::from(tonic::Status::not_found("unknown resource \"x\"\nmore"));
        assert_eq!(e.to_string(), "NOT_FOUND: unknown resource \"x\" more");
        let e = RpcError::from(tonic::Status::unavailable(""));
        assert_eq!(e.to_string(), "UNAVAILABLE");
    }
}
