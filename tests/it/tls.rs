//! TLS and mTLS on both listeners with a throwaway CA (Debian's `openssl`): tokens over
//! TLS, plaintext refused clearly, client-certificate identities (URI SAN, DNS SAN, CN),
//! untrusted and expired certificates refused, certificates rotated on SIGHUP while an open
//! Watch stream lives on, and the non-loopback refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use permitd::auth::{Mode, Principal, Role, Settings, TenantScope, token};
use permitd::config::Config;
use permitd::proto::{self, permits_client::PermitsClient, quotas_client::QuotasClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::certs::{self, Certs};
use crate::security::Token;
use crate::support::{TestServer, limit, resource};

fn tls_settings(c: &Certs, client_ca: bool) -> permitd::tls::Settings {
    permitd::tls::Settings {
        cert_file: c.path("server.pem"),
        key_file: c.path("server.key"),
        client_ca_file: client_ca.then(|| c.path("ca.pem")),
        client_auth: if client_ca {
            permitd::tls::ClientAuth::Required
        } else {
            permitd::tls::ClientAuth::None
        },
    }
}

fn principal(name: &str, role: Role, token_text: Option<&str>, cert: Option<&str>) -> Principal {
    Principal {
        name: name.into(),
        tenant: TenantScope::One("team-a".into()),
        role,
        max_priority: None,
        token_sha256: token_text.map(|t| token::sha256(t.as_bytes())),
        cert_identity: cert.map(str::to_owned),
    }
}

/// A TLS channel trusting `ca`, presenting `identity` (`name`.pem/.key) if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    c: &Certs,
    ca: &str,
    identity: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(c.read(&format!("{ca}.pem"))))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            c.read(&format!("{id}.pem")),
            c.read(&format!("{id}.key")),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

type Conn = InterceptedService<Channel, Token>;

/// Wait until the TLS server answers Health SERVING (bounded), with `identity` if mTLS.
async fn ready(addr: std::net::SocketAddr, c: &Certs, identity: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = tls_channel(addr, c, "ca", identity).await {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            if h.check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.get_ref().status == 1)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "TLS server never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn quotas(ch: Channel, t: Option<&str>) -> QuotasClient<Conn> {
    QuotasClient::with_interceptor(ch, Token(t.map(str::to_owned)))
}

fn permits(ch: Channel, t: Option<&str>) -> PermitsClient<Conn> {
    PermitsClient::with_interceptor(ch, Token(t.map(str::to_owned)))
}

/// An HTTPS GET with rustls: (status, response text).
async fn https_get(
    addr: std::net::SocketAddr,
    c: &Certs,
    path: &str,
    token_text: Option<&str>,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&c.read("ca.pem")) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = connector.connect(name, tcp).await.expect("TLS handshake");
    let auth = token_text
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{auth}connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    (
        text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        text,
    )
}

use rustls::pki_types::pem::PemObject as _;

/// Tokens over TLS on both listeners; plaintext to either TLS port fails with a clear
/// error instead of hanging.
#[tokio::test]
async fn tokens_over_tls_and_plaintext_refused() {
    if !certs::available("tokens_over_tls_and_plaintext_refused") {
        return;
    }
    let c = Certs::new();
    let server = TestServer::start_secure(|cfg: &mut Config| {
        cfg.auth = Settings {
            mode: Mode::Tokens,
            principals: vec![
                principal("a-admin", Role::Admin, Some("pmt_admin"), None),
                principal("a-viewer", Role::Viewer, Some("pmt_viewer"), None),
            ],
            principals_file: None,
        };
        cfg.tls = Some(tls_settings(&c, false));
    })
    .await;
    ready(server.addr, &c, None).await;
    let ch = tls_channel(server.addr, &c, "ca", None)
        .await
        .expect("TLS connects");
    quotas(ch.clone(), Some("pmt_admin"))
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource(
                "tls:x",
                vec![limit("requests", 10, Duration::from_secs(1), 0)],
                0,
            )),
        })
        .await
        .expect("admin over TLS");
    let p = permits(ch.clone(), Some("pmt_admin"))
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "tls:x".into(),
            ..Default::default()
        })
        .await
        .expect("acquire over TLS")
        .into_inner();
    assert!(p.granted);
    let e = permits(ch.clone(), Some("pmt_viewer"))
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "tls:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = permits(ch, None)
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "tls:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("Bearer"), "{}", e.message());

    // Plaintext gRPC to the TLS port: a transport error at once, not a hang.
    let t = Instant::now();
    let e = permits(server.channel().await, Some("pmt_admin"))
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "tls:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("this port speaks TLS"), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(5));

    // The HTTP listener: HTTPS with a token works; plaintext is told what to do.
    let m = server.metrics_addr.expect("metrics");
    let (status, body) = https_get(m, &c, "/metrics", Some("pmt_viewer")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("permitd_permits_granted_total{resource=\"tls:x\",tenant=\"team-a\"} 1"),
        "{body}"
    );
    let (status, body) = https_get(m, &c, "/metrics", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{body}"
    );
    let mut plain = tokio::net::TcpStream::connect(m).await.expect("connect");
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_string(&mut out)).await;
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("speaks TLS"),
        "{out}"
    );
    println!("RESULT tls_tokens ok");
    server.stop().await;
}

/// mTLS: each identity form maps to its principal; untrusted, expired and absent client
/// certificates are refused at the handshake.
#[tokio::test]
async fn mtls_identities_and_refusals() {
    if !certs::available("mtls_identities_and_refusals") {
        return;
    }
    let c = Certs::new();
    c.client(
        "worker",
        "ca",
        "ignored-cn",
        "URI:spiffe://corp/ns/etl/sa/worker",
        7,
    );
    c.client("dash", "ca", "ignored", "DNS:dash.internal", 7);
    c.client("ops", "ca", "ops-admin", "", 7);
    c.client("stranger", "ca", "nobody-knows", "", 7);
    c.client("rogue", "rogue-ca", "ops-admin", "", 7);
    c.client("expired", "ca", "ops-admin", "", -1);
    let server = TestServer::start_secure(|cfg: &mut Config| {
        cfg.auth = Settings {
            mode: Mode::Mtls,
            principals: vec![
                principal(
                    "etl",
                    Role::Worker,
                    None,
                    Some("spiffe://corp/ns/etl/sa/worker"),
                ),
                principal("dash", Role::Viewer, None, Some("dash.internal")),
                principal("ops", Role::Admin, None, Some("ops-admin")),
            ],
            principals_file: None,
        };
        cfg.tls = Some(tls_settings(&c, true));
    })
    .await;
    ready(server.addr, &c, Some("ops")).await;
    let ops = tls_channel(server.addr, &c, "ca", Some("ops"))
        .await
        .expect("CN identity");
    quotas(ops, None)
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource(
                "m:x",
                vec![limit("requests", 10, Duration::from_secs(1), 0)],
                0,
            )),
        })
        .await
        .expect("the CN principal is an admin");
    let worker = tls_channel(server.addr, &c, "ca", Some("worker"))
        .await
        .expect("URI SAN");
    let p = permits(worker.clone(), None)
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "m:x".into(),
            ..Default::default()
        })
        .await
        .expect("the SPIFFE principal is a worker");
    assert!(p.get_ref().granted);
    let e = quotas(worker, None)
        .delete_resource(proto::DeleteResourceRequest { name: "m:x".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "role worker cannot DeleteResource (needs admin)"
    );
    let dash = tls_channel(server.addr, &c, "ca", Some("dash"))
        .await
        .expect("DNS SAN");
    quotas(dash.clone(), None)
        .get_quota(proto::GetQuotaRequest {
            resource: "m:x".into(),
            ..Default::default()
        })
        .await
        .expect("the DNS principal reads");
    let e = permits(dash, None)
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "m:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A certificate the CA signed but no principal holds: authenticated by TLS, unknown here.
    let stranger = tls_channel(server.addr, &c, "ca", Some("stranger"))
        .await
        .expect("trusted");
    let e = quotas(stranger, None)
        .get_quota(proto::GetQuotaRequest {
            resource: "m:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("nobody-knows"), "{}", e.message());
    // Refused at the handshake: another CA's, an expired one, none.
    for id in [Some("rogue"), Some("expired"), None] {
        let refused = match tls_channel(server.addr, &c, "ca", id).await {
            Err(_) => true,
            Ok(ch) => quotas(ch, None)
                .get_quota(proto::GetQuotaRequest {
                    resource: "m:x".into(),
                    ..Default::default()
                })
                .await
                .is_err_and(|e| e.code() == Code::Unavailable || e.code() == Code::Unknown),
        };
        assert!(refused, "{id:?} was let in");
    }
    println!("RESULT mtls ok");
    server.stop().await;
}

/// curl's answer to a Connect call over TLS: (HTTP status, body), or curl's exit code
/// when it got no HTTP answer (a refused handshake). curl runs off the runtime's thread:
/// the server under test shares it.
async fn curl_connect(
    c: &Certs,
    url: &str,
    identity: Option<&str>,
    http: &str,
    body: &str,
) -> Result<(u16, String), i32> {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", http, "--cacert"])
        .arg(c.path("ca.pem"))
        .args(["-H", "content-type: application/json", "-d", body])
        .args(["-w", "\n%{http_code}"]);
    if let Some(id) = identity {
        cmd.arg("--cert")
            .arg(c.path(&format!("{id}.pem")))
            .arg("--key")
            .arg(c.path(&format!("{id}.key")));
    }
    cmd.arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("joined")
        .expect("run curl");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// Connect (HTTP/JSON) over TLS with client certificates, as curl sends it: on the gRPC
/// port over HTTP/1.1 and HTTP/2 (ALPN offers both) and on the HTTP listener, each
/// identity gets what its role allows; without a certificate the handshake fails, and
/// plaintext is told to use https.
#[tokio::test]
async fn connect_over_mtls_with_curl() {
    if !certs::available("connect_over_mtls_with_curl") {
        return;
    }
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "connect_over_mtls_with_curl: curl is required in CI (apt-get install -y curl)"
        );
        eprintln!("SKIP connect_over_mtls_with_curl: curl not installed");
        return;
    }
    let c = Certs::new();
    c.client("ops", "ca", "ops-admin", "", 7);
    c.client("dash", "ca", "ignored", "DNS:dash.internal", 7);
    let server = TestServer::start_secure(|cfg: &mut Config| {
        cfg.auth = Settings {
            mode: Mode::Mtls,
            principals: vec![
                principal("ops", Role::Admin, None, Some("ops-admin")),
                principal("dash", Role::Viewer, None, Some("dash.internal")),
            ],
            principals_file: None,
        };
        cfg.tls = Some(tls_settings(&c, true));
    })
    .await;
    ready(server.addr, &c, Some("ops")).await;
    let grpc_port = format!("https://localhost:{}", server.addr.port());
    let http_port = format!(
        "https://localhost:{}",
        server.metrics_addr.expect("HTTP listener").port()
    );
    let put = r#"{"resource":{"name":"c:x","limits":[{"dimension":"requests","amount":10,"period":"1s"}]}}"#;
    let mut calls = 0;
    for (base, http) in [
        (&grpc_port, "--http1.1"),
        (&grpc_port, "--http2"),
        (&http_port, "--http1.1"),
    ] {
        let url = |m: &str| format!("{base}/permitd.v1.{m}");
        let ok = curl_connect(&c, &url("Quotas/PutResource"), Some("ops"), http, put).await;
        assert!(
            matches!(&ok, Ok((200, b)) if b.contains("\"c:x\"")),
            "{base} {http}: {ok:?}"
        );
        let read = curl_connect(
            &c,
            &url("Quotas/GetQuota"),
            Some("dash"),
            http,
            r#"{"resource":"c:x"}"#,
        )
        .await;
        assert!(matches!(&read, Ok((200, _))), "{base} {http}: {read:?}");
        let denied = curl_connect(&c, &url("Quotas/PutResource"), Some("dash"), http, put).await;
        assert!(
            matches!(&denied, Ok((403, b)) if b.contains("permission_denied") && b.contains("role viewer")),
            "{base} {http}: {denied:?}"
        );
        let none = curl_connect(
            &c,
            &url("Quotas/GetQuota"),
            None,
            http,
            r#"{"resource":"c:x"}"#,
        )
        .await;
        assert!(
            none.is_err(),
            "{base} {http}: no certificate was let in: {none:?}"
        );
        calls += 4;
    }
    // Plaintext HTTP/1.1 to the TLS gRPC port: told why, in HTTP/1.1.
    let mut plain = std::process::Command::new("curl");
    plain
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
        ])
        .arg(format!(
            "http://127.0.0.1:{}/permitd.v1.Quotas/ListResources",
            server.addr.port()
        ))
        .args(["-w", "%{http_code}"]);
    let out = tokio::task::spawn_blocking(move || plain.output())
        .await
        .expect("joined")
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("this port speaks TLS: use https://") && text.ends_with("400"),
        "plaintext: {text}"
    );
    println!("RESULT connect_tls curl_calls={calls} ok");
    server.stop().await;
}

/// The real binary: its certificate rotated on disk is served after SIGHUP while a Watch
/// stream opened before it keeps streaming; the CLI speaks TLS with a token.
#[tokio::test]
async fn sighup_rotates_certificates_without_dropping_streams() {
    if !certs::available("sighup_rotates_certificates_without_dropping_streams") {
        return;
    }
    let c = Certs::new();
    c.ca("ca2");
    let data = tempfile::tempdir().expect("tempdir");
    let cert = c.path("live.pem");
    let key = c.path("live.key");
    std::fs::copy(c.path("server.pem"), &cert).expect("copy");
    std::fs::copy(c.path("server.key"), &key).expect("copy");
    // The token through the CLI, as an operator would mint it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permitd"))
        .args([
            "token", "new", "--name", "ops", "--tenant", "team-a", "--role", "admin",
        ])
        .output()
        .expect("token new");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let tok = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_owned();
    let block = &text[text.find("[[auth.principals]]").expect("block")..];
    let config = data.path().join("permitd.toml");
    let principals = data.path().join("principals.toml");
    std::fs::write(&principals, "").expect("principals file");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmode = \"tokens\"\nprincipals_file = {:?}\n\n{block}",
            principals.display().to_string()
        ),
    )
    .expect("config");
    let port = crate::spawned::free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log = data.path().join("log");
    let launch = crate::spawned::Launch {
        args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ],
        ..Default::default()
    };
    let mut child = crate::spawned::command(&data.path().join("d"), Some(&config), &launch, addr)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ch = loop {
        if let Ok(ch) = tls_channel(addr, &c, "ca", None).await {
            break ch;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    quotas(ch.clone(), Some(&tok))
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource(
                "rot:x",
                vec![limit("requests", 100, Duration::from_secs(1), 0)],
                0,
            )),
        })
        .await
        .expect("define");
    let mut watch = quotas(ch.clone(), Some(&tok))
        .watch(proto::WatchRequest {
            resource_prefix: "rot:".into(),
            min_interval: Some(crate::support::dur(Duration::from_millis(10))),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("snapshot");
    assert_eq!(first.resource, "rot:x");

    // A principal added to the principals file, known after the same SIGHUP.
    let late = "pmt_added_after_start";
    let e = quotas(ch.clone(), Some(late))
        .get_quota(proto::GetQuotaRequest {
            resource: "rot:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    std::fs::write(
        &principals,
        format!(
            "[[principals]]\nname = \"late\"\ntenant = \"team-a\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
            token::hex(&token::sha256(late.as_bytes()))
        ),
    )
    .expect("principals");

    // Rotate: a certificate from another CA, written over the files in place.
    c.server("next", "ca2");
    std::fs::copy(c.path("next.pem"), &cert).expect("rotate cert");
    std::fs::copy(c.path("next.key"), &key).expect("rotate key");
    assert!(
        tls_channel(addr, &c, "ca2", None).await.is_err(),
        "rotated before SIGHUP"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let ch2 = loop {
        if let Ok(ch) = tls_channel(addr, &c, "ca2", None).await {
            break ch;
        }
        assert!(
            Instant::now() < deadline,
            "never served the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        tls_channel(addr, &c, "ca", None).await.is_err(),
        "old certificate still served"
    );
    quotas(ch2.clone(), Some(late))
        .get_quota(proto::GetQuotaRequest {
            resource: "rot:x".into(),
            ..Default::default()
        })
        .await
        .expect("the principal added before SIGHUP");
    // The stream opened before the rotation sees a grant made over the new one.
    let p = permits(ch2, Some(&tok))
        .acquire_permit(proto::AcquirePermitRequest {
            resource: "rot:x".into(),
            ..Default::default()
        })
        .await
        .expect("acquire after rotation");
    assert!(p.get_ref().granted);
    let update = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("update within 5 s")
        .expect("stream alive")
        .expect("message");
    assert_eq!(update.in_flight, 1);
    // The CLI over TLS with a token.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permitd"))
        .args([
            "quota",
            "rot:x",
            "--server",
            &format!("https://localhost:{port}"),
        ])
        .arg("--tls-ca")
        .arg(c.path("ca2.pem"))
        .env("PERMITD_TOKEN", &tok)
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_permitd"))
        .args([
            "quota",
            "rot:x",
            "--server",
            &format!("https://localhost:{port}"),
        ])
        .arg("--tls-ca")
        .arg(c.path("ca2.pem"))
        .env_remove("PERMITD_TOKEN")
        .output()
        .expect("cli");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("UNAUTHENTICATED"),
        "{err}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("TLS certificates reloaded"), "{log}");
    assert!(!log.contains(&tok), "the token reached the log");
    println!("RESULT tls_rotation ok");
}

/// `serve` refuses a non-loopback address without auth and TLS, naming the field, and
/// serves it with `--insecure` (warning at start).
#[tokio::test]
async fn non_loopback_needs_auth_and_tls_or_insecure() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = crate::spawned::free_port();
    let any: std::net::SocketAddr = ([0, 0, 0, 0], port).into();
    let out = crate::spawned::command(data.path(), None, &crate::spawned::Launch::default(), any)
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("server.listen")
            && err.contains("not a loopback address")
            && err.contains("--insecure"),
        "{err}"
    );

    let launch = crate::spawned::Launch {
        args: vec!["--insecure".into()],
        ..Default::default()
    };
    let log = data.path().join("log");
    let mut child = crate::spawned::command(data.path(), None, &launch, any)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.get_ref().status == 1);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("without auth and TLS (--insecure)"), "{log}");
}
