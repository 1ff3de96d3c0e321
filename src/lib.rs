//! vitals: a small gRPC daemon for ARM Linux devices, and its client.
#![forbid(unsafe_code)]

pub mod proto;
pub mod config;
pub mod pki;
pub mod tls;
