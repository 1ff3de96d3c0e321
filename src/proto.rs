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

/// The encoded `FileDescriptorSet` of every proto above, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vitals_descriptor.bin"));
