//! Compiles proto/ with protox (pure Rust, no system protoc) and writes the
//! file descriptor set that server reflection serves. The remote_write messages
//! (proto/prometheus/) are compiled apart: vitalsd sends them, it serves no such service.
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/vitals/echo/v1/echo.proto",
    "proto/vitals/metrics/v1/metrics.proto",
    "proto/grpc/health/v1/health.proto",
    "proto/vitals/admin/v1/admin.proto",
];

/// Prometheus remote_write 1.0 (src/remote_write.rs); not in the reflection set.
const REMOTE_WRITE: &[&str] = &[
    "proto/prometheus/types.proto",
    "proto/prometheus/remote.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS.iter().chain(REMOTE_WRITE) {
        println!("cargo:rerun-if-changed={proto}");
    }
    // The target triple, for the `vitals_build_info` metric.
    println!("cargo:rustc-env=VITALS_TARGET={}", env::var("TARGET")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("vitals_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // vitalsctl prints metrics snapshots as JSON.
        .type_attribute(".vitals.metrics.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(protox::compile(REMOTE_WRITE, ["proto"])?)?;
    Ok(())
}
