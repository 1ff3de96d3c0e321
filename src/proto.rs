//! Generated protobuf and gRPC code, one module per package.

pub mod echo {
    tonic::include_proto!("vitals.echo.v1");
}
pub mod metrics {
    tonic::include_proto!("vitals.metrics.v1");
}
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}
pub mod admin {
    tonic::include_proto!("vitals.admin.v1");
}
/// Prometheus remote_write 1.0's messages, which the push sends ([`crate::remote_write`]);
/// not in [`FILE_DESCRIPTOR_SET`], since no service of ours takes them.
pub mod prometheus {
    tonic::include_proto!("prometheus");
}

/// The encoded `FileDescriptorSet` of every service's proto above, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vitals_descriptor.bin"));
