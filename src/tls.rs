//! TLS on both listeners (rustls with `ring`), with certificates that reload on SIGHUP.
//!
//! permitd runs its own accept loop instead of tonic's built-in TLS so that a reload takes
//! effect for every new connection while open ones (a Watch stream, a long queue wait) keep
//! the session they started with. Handshakes run concurrently, each bounded in time, and
//! their number is capped, so a slow or silent client holds one permit of the cap and no
//! accept slot. A client that speaks plaintext to a TLS port is told so (HTTP) or
//! dropped (gRPC) and logged.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::listen::Capped;

/// Longest a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, per listener.
const MAX_HANDSHAKES: usize = 1024;
/// Accepted connections waiting for the server to take them.
const BACKLOG: usize = 128;

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not asked for.
    None,
    /// Verified when presented.
    Optional,
    /// Every client must present one the CA signed.
    Required,
}

impl ClientAuth {
    /// Parse `none`, `optional` or `required`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "optional" => Some(Self::Optional),
            "required" => Some(Self::Required),
            _ => None,
        }
    }
}

/// The validated `[tls]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// CA that signs client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
}

/// A TLS file that cannot be used, named by its setting.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message} ({path})")]
pub struct TlsError {
    /// The setting: `tls.cert_file`.
    pub field: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        field,
        path: path.to_owned(),
        message: message.into(),
    }
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| err(field, path, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(field, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(err(field, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The server configuration `settings` describe, offering `alpn`.
fn build(settings: &Settings, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certs("tls.cert_file", &settings.cert_file)?;
    let key_path = &settings.key_file;
    let pem = std::fs::read(key_path)
        .map_err(|e| err("tls.key_file", key_path, format!("cannot read: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| err("tls.key_file", key_path, "holds no PEM private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| err("tls", &settings.cert_file, e.to_string()))?;
    let builder = match (&settings.client_ca_file, settings.client_auth) {
        (Some(ca), auth) if auth != ClientAuth::None => {
            let mut roots = RootCertStore::empty();
            for c in certs("tls.client_ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| err("tls.client_ca_file", ca, format!("not a CA: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .map_err(|e| err("tls.client_ca_file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        err(
            "tls.key_file",
            key_path,
            format!("does not fit tls.cert_file: {e}"),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// Which protocol a listener speaks inside TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC over HTTP/2 (`h2`), and Connect over either HTTP version.
    H2,
    /// Metrics and the dashboard: HTTP/1.1.
    Http1,
}

impl Alpn {
    /// The protocols offered, preferred first.
    const fn ids(self) -> &'static [&'static [u8]] {
        match self {
            Self::H2 => &[b"h2", b"http/1.1"],
            Self::Http1 => &[b"http/1.1"],
        }
    }
}

/// The certificates in force for both listeners; replaced whole on reload.
#[derive(Debug)]
pub struct Tls {
    settings: Settings,
    configs: RwLock<[Arc<rustls::ServerConfig>; 2]>,
}

impl Tls {
    /// Read and check every file.
    ///
    /// # Errors
    /// A file is missing, unreadable, not PEM, or the key does not fit the certificate.
    pub fn load(settings: Settings) -> Result<Self, TlsError> {
        let configs = Self::read(&settings)?;
        Ok(Self {
            settings,
            configs: RwLock::new(configs),
        })
    }

    fn read(settings: &Settings) -> Result<[Arc<rustls::ServerConfig>; 2], TlsError> {
        Ok([
            Arc::new(build(settings, Alpn::H2.ids())?),
            Arc::new(build(settings, Alpn::Http1.ids())?),
        ])
    }

    /// Re-read the files (SIGHUP): new connections get the new certificates; open ones
    /// keep theirs. On error the certificates in force stay.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = Self::read(&self.settings)?;
        if let Ok(mut c) = self.configs.write() {
            *c = configs;
        }
        Ok(())
    }

    fn acceptor(&self, alpn: Alpn) -> TlsAcceptor {
        let i = usize::from(alpn == Alpn::Http1);
        let config = match self.configs.read() {
            Ok(c) => Arc::clone(&c[i]),
            Err(p) => Arc::clone(&p.into_inner()[i]),
        };
        TlsAcceptor::from(config)
    }
}

/// A connection whose handshake finished, counted against its listener's cap.
pub type Accepted = (TlsStream<Capped<TcpStream>>, SocketAddr);

/// Accept on `listener`, handshake with the certificates in force at each accept, and hand
/// the finished connections out. The loop ends when the receiver is dropped.
#[must_use]
pub fn accept(
    listener: TcpListener,
    tls: Arc<Tls>,
    alpn: Alpn,
    max_connections: usize,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let connections = Arc::new(Semaphore::new(max_connections));
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                c = crate::listen::accept_one(&listener, &connections) => c,
            };
            let Some((tcp, peer)) = next else { return };
            let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                tracing::warn!(%peer, "too many TLS handshakes in progress; connection dropped");
                continue;
            };
            let (tx, acceptor) = (tx.clone(), tls.acceptor(alpn));
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, acceptor, alpn)).await
                {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// Handshake, after checking that the client speaks TLS at all (a handshake record starts
/// with 0x16): a plaintext HTTP client is answered in plaintext, so its user sees why.
async fn handshake(
    tcp: Capped<TcpStream>,
    acceptor: TlsAcceptor,
    alpn: Alpn,
) -> io::Result<TlsStream<Capped<TcpStream>>> {
    let mut first = [0u8; 1];
    let n = tcp.get_ref().peek(&mut first).await?;
    if n == 1 && first[0] != 0x16 {
        let mut tcp = tcp;
        // Read what the client sent first (its request, or the HTTP/2 preface), so closing
        // does not reset the connection before it reads the answer.
        let mut sink = [0u8; 1024];
        let n = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut sink),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
        // The gRPC port also serves Connect over HTTP/1.1: answer in what the client spoke.
        let http2 = alpn == Alpn::H2 && sink[..n].starts_with(b"PRI ");
        let reply = if http2 {
            goaway(b"this port speaks TLS: use https://")
        } else {
            let body = "this port speaks TLS: use https://\n";
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let _ = tcp.write_all(&reply).await;
        let _ = tcp.shutdown().await;
        // Drain until the client closes (bounded): closing with its bytes unread would
        // reset the connection and lose the answer.
        let drain = async {
            while tokio::io::AsyncReadExt::read(&mut tcp, &mut sink)
                .await
                .is_ok_and(|n| n > 0)
            {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plaintext connection to a TLS port",
        ));
    }
    acceptor.accept(tcp).await
}

/// An HTTP/2 server preface (empty SETTINGS) and a GOAWAY with INADEQUATE_SECURITY and
/// `debug` as its text, which h2 clients report as the reason.
fn goaway(debug: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let len = u32::try_from(8 + debug.len()).unwrap_or(8).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], 0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0c]);
    out.extend_from_slice(debug);
    out
}

/// [`accept`] as an axum listener (the HTTP side).
#[derive(Debug)]
pub struct HttpListener {
    rx: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl HttpListener {
    /// Serve TLS on `listener`.
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn new(listener: TcpListener, tls: Arc<Tls>, max_connections: usize) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            rx: accept(listener, tls, Alpn::Http1, max_connections),
            local,
        })
    }
}

/// Who is at the other end of an HTTP connection: its address and, over mTLS, its
/// verified certificate chain.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// The client certificate chain, when one was presented.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl axum::serve::Listener for HttpListener {
    type Io = TlsStream<Capped<TcpStream>>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some((stream, addr)) => {
                let certs = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.to_vec()));
                (stream, Peer { addr, certs })
            }
            // The accept loop only ends when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            certs: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: None,
            client_auth: ClientAuth::None,
        }
    }

    /// A missing or non-PEM file is refused at start, naming its setting.
    #[test]
    fn bad_files_name_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let e = Tls::load(settings(dir.path())).unwrap_err();
        assert_eq!(e.field, "tls.cert_file");
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::write(dir.path().join("cert.pem"), "not pem").unwrap();
        let e = Tls::load(settings(dir.path())).unwrap_err();
        assert_eq!(e.field, "tls.cert_file");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        std::fs::write(
            dir.path().join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), "nothing").unwrap();
        let e = Tls::load(settings(dir.path())).unwrap_err();
        assert_eq!(e.field, "tls.key_file");
        let mut s = settings(dir.path());
        s.client_ca_file = Some(dir.path().join("ca.pem"));
        s.client_auth = ClientAuth::Required;
        std::fs::write(
            dir.path().join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Tls::load(s).unwrap_err();
        assert_eq!(e.field, "tls.client_ca_file");
    }

    /// The GOAWAY a plaintext HTTP/2 client gets: a SETTINGS frame, then GOAWAY
    /// (type 7, stream 0, last stream 0, INADEQUATE_SECURITY) with the reason.
    #[test]
    fn goaway_frame() {
        let f = goaway(b"why");
        assert_eq!(&f[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(&f[9..18], &[0, 0, 11, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&f[18..26], &[0, 0, 0, 0, 0, 0, 0, 0x0c]);
        assert_eq!(&f[26..], b"why");
    }

    /// Config values parse; others are refused.
    #[test]
    fn client_auth_names() {
        assert_eq!(ClientAuth::parse("optional"), Some(ClientAuth::Optional));
        assert_eq!(ClientAuth::parse("required"), Some(ClientAuth::Required));
        assert_eq!(ClientAuth::parse("none"), Some(ClientAuth::None));
        assert_eq!(ClientAuth::parse("yes"), None);
    }
}
