//! The true floor of `scripts/bench.sh`: a bare tonic server that serves only
//! `grpc.health.v1` on a current-thread runtime, with tonic's defaults and nothing of
//! permitd's (no layers, no router of seven services, no store). `permitd bench
//! --floor-server` measures its `Health/Check` in the same rounds as permitd's phases, so
//! every figure can be read against what any tonic server costs.
//!
//! `cargo run --release --example floor -- 127.0.0.1:50990`

use std::net::SocketAddr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50990".to_owned())
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (health, service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(addr)
            .await
    })?;
    Ok(())
}
