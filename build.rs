//! Compiles `proto/permitd/v1/*.proto` with protox (pure Rust, so no system `protoc`) and
//! generates the prost messages and tonic services, plus the descriptor set that server
//! reflection serves.

use protox::prost::Message as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/permitd/v1/resource.proto",
        "proto/permitd/v1/permits.proto",
        "proto/permitd/v1/quotas.proto",
        "proto/permitd/v1/idempotency.proto",
        "proto/permitd/v1/cache.proto",
        // Envoy's rate limit service, a trimmed wire-compatible copy (proto/envoy/README.md).
        "proto/envoy/service/ratelimit/v3/rls.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set itself; reflection needs it.
    std::fs::write(out.join("permitd_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Services whose issue has not landed answer UNIMPLEMENTED through these stubs.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
