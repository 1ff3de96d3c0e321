//! vitals: a small gRPC daemon for ARM Linux devices (`vitalsd`), and its client (`vitalsctl`).
//!
//! - [`auth`]: per-method ACL by certificate identity, bearer tokens, audit lines
//! - [`config`]: the layered config files, validated into typed values
//! - [`secrets`]: `secret:NAME` values pulled at startup from credentials, files or Vault
//! - [`tls`]: rustls server and client configs, peer identity from client certificates
//! - [`pki`]: a development CA and certificates
//! - [`der`]: the few certificate fields the daemon reads (identity, expiry, an EC key)
//! - [`error`]: an error and its sources as one sentence
//! - [`daemon`]: startup after config, serving, drain on shutdown
//! - [`server`]: accept loops, connection cap, per-connection HTTP/2 lifecycle, routing
//! - [`service`]: the gRPC services: health, echo, metrics
//! - [`health`]: health state from lifecycle and threshold checks
//! - [`sampler`]: the one sysinfo sampler
//! - [`rpc_stats`]: per-method call statistics
//! - [`runtime`]: the tokio runtime: current-thread for one worker, multi-thread for more
//! - [`telemetry`]: tracing to journald, JSON or text
//! - [`systemd`]: sd_notify and the watchdog
//! - [`client`]: what vitalsctl and the tests use to call a daemon
//! - [`proto`]: generated protobuf code
// Two audited exceptions: adopting socket-activation descriptors (systemd::adopt), and
// exporting `pow` by its C name (runtime::pow, safe code; the attribute is what is unsafe).
#![deny(unsafe_code)]

pub mod auth;
pub mod client;
pub mod config;
pub mod context;
pub mod daemon;
pub mod der;
pub mod error;
pub mod health;
pub mod methods;
pub mod pki;
pub mod proto;
pub mod rpc_stats;
pub mod runtime;
pub mod sampler;
pub mod secrets;
pub mod server;
pub mod service;
pub mod swap;
pub mod systemd;
pub mod telemetry;
pub mod tls;
