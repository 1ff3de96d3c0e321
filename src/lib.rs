//! vitals: a small gRPC daemon for ARM Linux devices (`vitalsd`), and its client (`vitalsctl`).
//!
//! Composition up, shared vocabulary down: `main` → [`daemon`] → {[`server`], [`service`],
//! [`auth`], [`secrets`], [`config`], …} → {[`tls`], [`context`], [`methods`],
//! [`rpc_stats`], …}. Imports only point down (`scripts/layers.py` checks it), and nothing
//! but the binaries and the tests imports [`client`].
//!
//! Composition:
//! - [`daemon`]: the numbered startup steps and their exit codes, serving, reload, drain
//! - [`client`]: what vitalsctl and the tests use to call a daemon
//!
//! Transport and handlers (neither names the other):
//! - [`server`]: accept loops, connection caps, per-connection HTTP/2, the per-call layer
//! - [`service`]: the router and the gRPC services: health, echo, metrics, admin (rotate)
//!
//! Policy and state:
//! - [`auth`]: per-method ACL by certificate identity, bearer tokens, audit lines
//! - [`secrets`]: `secret:NAME` values pulled from credentials, files or Vault, TLS keys included;
//!   the server certificate signed by a Vault/OpenBao pki engine (`[tls.issue]`), checked
//!   before it is kept (`secrets/verify.rs`)
//! - [`health`]: health state from lifecycle and threshold checks, each check named with its verdict
//! - [`telemetry`]: tracing to journald, JSON or text
//!
//! What they are built from:
//! - [`config`]: the layered config files, validated into typed values; one unit grammar
//! - [`tls`]: rustls server and client configs from resolved material, peer identity
//! - [`outbound`]: the one HTTP client (secret store, remote_write receiver), on hyper's http1
//! - [`rpc_stats`]: per-method call statistics
//! - [`sampler`]: the one sysinfo sampler (node_exporter's extra sources in sampler/node.rs,
//!   statfs under deadlines in sampler/filesystems.rs), and what a scrape or a push reads at
//!   that moment (sampler/live.rs over disk.rs, net.rs, netclass.rs, clock.rs, textfile.rs)
//! - [`series`]: the Prometheus series the scrape and the push both produce, built once
//!   (node_exporter's live collectors in series/node.rs)
//! - [`remote_write`]: remote_write bodies, snappy-compressed by the `snap` crate
//!
//! Vocabulary:
//! - [`methods`]: every routed method once (path, service, streaming kind, request size)
//! - [`context`]: what the call layer and handlers share (peer, ids, trailers, routes)
//! - [`file`]: files read bounded: opened without blocking, regular files only, a size cap
//! - [`swap`]: the one value a reload replaces in a single step
//! - [`x509`]: the few certificate fields the daemon reads (identity, names, validity, serial,
//!   keys and their type)
//! - [`error`]: an error and its sources as one sentence
//! - [`pki`]: a development CA and certificates
//! - [`runtime`]: the tokio runtime: current-thread for one worker, multi-thread for more
//! - [`systemd`]: sd_notify, the watchdog, socket activation
//! - [`malloc`]: glibc's malloc told to give memory back (a fixed mmap threshold, trims)
//! - [`throttle`]: log lines at a bounded pace, with what was held back counted by reason
//! - [`supervise`]: long-lived tasks run again after a panic, counted, failing in readiness
//! - [`proto`]: generated protobuf code
// Six audited exceptions: adopting socket-activation descriptors (systemd::adopt),
// exporting `pow` by its C name (runtime::pow, safe code; the attribute is what is unsafe),
// statvfs(2), which std lacks (sampler::filesystems::statvfs), declaring glibc's
// mallopt and malloc_trim (malloc::glibc, integers in and out) and execve (strings in),
// and two libc calls std does not wrap, each on a struct it fills: adjtimex(2) read only
// (sampler::clock::timex) and localtime_r(3) (sampler::clock::time_zone).
#![deny(unsafe_code)]

#[cfg(feature = "count-allocs")]
pub mod alloc_count;
pub mod auth;
pub mod client;
pub mod config;
pub mod context;
pub mod daemon;
pub mod error;
pub mod file;
pub mod health;
pub mod malloc;
pub mod methods;
pub mod outbound;
pub mod pki;
pub mod proto;
pub mod remote_write;
pub mod rpc_stats;
pub mod runtime;
pub mod sampler;
pub mod secrets;
pub mod series;
pub mod server;
pub mod service;
pub mod supervise;
pub mod swap;
pub mod systemd;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod x509;
