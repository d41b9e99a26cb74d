//! The true floor of `scripts/bench.sh`: a bare tonic server that serves only
//! `grpc.health.v1` on a current-thread runtime, with tonic's defaults and nothing of
//! permitd's (no layers, no router of seven services, no store). `permitd bench
//! --floor-server` measures its `Health/Check` in the same rounds as permitd's phases, so
//! every figure can be read against what any tonic server costs.
//!
//! With a certificate and key (PEM) it serves TLS through tonic's own rustls acceptor: the
//! floor of the TLS rows of `scripts/bench-floor.sh`.
//!
//! `cargo run --release --example floor -- 127.0.0.1:50990 [CERT KEY]`

use std::net::SocketAddr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:50990".to_owned())
        .parse()?;
    let tls = match (args.next(), args.next()) {
        (Some(cert), Some(key)) => Some(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?),
        )),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (health, service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        builder.add_service(service).serve(addr).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
