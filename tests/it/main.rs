//! Integration tests: the real `vitalsd` binary, a fresh PKI, mutual TLS on loopback.

mod support;

mod auth;
mod blackbox;
mod config;
mod connections;
mod dropin;
mod echo;
mod health;
mod hostile;
mod issue;
mod metrics;
mod nspawn;
mod prober_view;
mod push;
mod reload;
mod scrape;
mod secrets;
mod systemd;
mod tls;
mod vitalsctl_bench;
mod vitalsctl_echo;
mod vitalsctl_probe;
mod watch;
