//! Hostile input and faults (issue 8): broken and abusive peers, and faults, against the real
//! daemon. Every attack is followed by the same checks: a well-behaved client is served
//! promptly, the daemon's open descriptors return to the baseline, and its RSS returns to
//! within [`harness::RSS_MARGIN_KIB`] of the baseline. HTTP/2 and transport abuse is driven
//! by `tests/hostile/h2_abuse.py` (python3, standard library only), gRPC-level abuse by the
//! raw h2 client in `support/raw.rs`. Each test prints one `hostile:` line with what it saw;
//! RELIABILITY.md collects them.
//!
//! [`harness`] holds what the cases share; each other file is one theme of cases. A new
//! case goes in the file of its theme (or a new one, added below) as a `#[tokio::test]` with
//! a `///` line saying what it proves; most are a few lines around
//! `attack_and_recover(&daemon, "attack", &[..])` or a baseline, a raw call and
//! `assert_recovered(&daemon, "case", base)`.

mod harness;

mod auth;
mod config;
mod connections;
mod credentials;
mod faults;
mod files;
mod grpc;
mod h2;
mod http1;
mod memory;
mod pki;
mod scrape;
mod tasks;
