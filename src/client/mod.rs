//! What vitalsctl and the tests need to call a server. vitalsctl's command line (flags,
//! usage, output, one file per command) is the binary's, in `src/bin/vitalsctl/`; nothing
//! here reads flags or prints.
//!
//! - [`dial`]: connecting: plaintext, server-only or mutual TLS, a connect timeout, a
//!   polite close, and the liveness of a connection
//! - [`probe`]: grpc.health.v1 Check, Watch and List, and a sweep over many targets
//! - [`retry`]: the gRPC retry policy (proposal A6): parsing, backoff, server pushback
//! - [`balance`]: several addresses behind pick_first or round_robin
//! - [`echo`]: one echo call with retries over a balancer, and a run of them
//! - [`bench`]: the load generator: a [`bench::Load`] in, a [`bench::Report`] out
//! - [`histogram`]: a log-linear latency histogram
//! - [`cpu`]: this process's CPU time, from /proc
//! - [`view`]: metrics snapshots as a table or JSON

pub mod balance;
pub mod bench;
pub mod cpu;
pub mod dial;
pub mod echo;
pub mod histogram;
pub mod probe;
pub mod retry;
mod view;

use std::time::Duration;

pub use dial::{Conn, Dial, Liveness, Target, TlsOptions, Trust};
pub use view::{MetricsView, snapshot_json, snapshot_table};

use crate::tls;

/// Exit codes, as grpc_health_probe has them; every command uses the same ones.
pub mod exit {
    pub const OK: u8 = 0;
    /// Invalid arguments, or TLS files that cannot be read.
    pub const ARGS: u8 = 1;
    /// The connection failed or timed out.
    pub const CONNECT: u8 = 2;
    /// The call failed or timed out.
    pub const RPC: u8 = 3;
    /// The server answered that it is not serving.
    pub const NOT_SERVING: u8 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Tls(#[from] tls::Error),
    #[error("no system CA bundle found (set SSL_CERT_FILE or give a CA file)")]
    NoSystemRoots,
    #[error("`{0}` is not a host:port address")]
    Address(String),
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("`{0}` is not a valid user agent")]
    UserAgent(String),
    #[error("resolving {addr}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to {addr}")]
    Stream {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {why}")]
    NoPreface { addr: String, why: String },
    #[error("connecting to {addr}: timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error(
        "{0}: TLS over a unix socket is not supported (the health listener there is plaintext)"
    )]
    UnixTls(String),
}

impl Error {
    /// The exit code this error means: bad arguments or files (1), or no connection (2).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Tls(_)
            | Error::NoSystemRoots
            | Error::Address(_)
            | Error::ServerName(_)
            | Error::UserAgent(_)
            | Error::UnixTls(_) => exit::ARGS,
            Error::Resolve { .. }
            | Error::NoAddress { .. }
            | Error::Connect { .. }
            | Error::Stream { .. }
            | Error::NoPreface { .. }
            | Error::ConnectTimeout { .. } => exit::CONNECT,
        }
    }
}
