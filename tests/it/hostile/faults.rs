//! Faults around the daemon rather than from a peer: SIGTERM under load, and a full
//! filesystem under its log.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use vitals::proto::{
    echo::{EchoRequest, echo_client::EchoClient},
    metrics::metrics_client::MetricsClient,
};

use super::harness::ECHO;
use crate::support::{NamespacedScript, TestDaemon, TestPki, spawn_echo, wait_in_flight};

/// SIGTERM with 500 calls in flight (echo, 3 s delay, 50 on each of 10 connections; the
/// signal once the daemon's metrics count all 500 in flight): every call completes OK and
/// the daemon exits 0.
#[tokio::test]
async fn sigterm_with_500_in_flight() {
    let mut daemon = TestDaemon::start("").await;
    // Connect first, so that the calls start together even when connecting is slow.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(daemon.echo().await);
    }
    let metrics = MetricsClient::new(daemon.channel().await);
    let spawned = Instant::now();
    let mut calls = Vec::new();
    for (c, echo) in clients.into_iter().enumerate() {
        for i in 0..50 {
            let sent = format!("{c}-{i}");
            calls.push((sent.clone(), spawn_echo(&echo, &sent, 3000)));
        }
    }
    wait_in_flight(&metrics, ECHO, 500, Duration::from_secs(5)).await;
    let signalled = Instant::now();
    daemon.signal("TERM");
    let mut failed = Vec::new();
    for (sent, call) in calls {
        match call.await.unwrap() {
            Ok(message) => assert_eq!(message, sent, "each call gets its own message back"),
            Err(status) => failed.push(format!("{sent}: {status:?}")),
        }
    }
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    eprintln!(
        "hostile: sigterm_with_500_in_flight: 500 in flight {} ms after starting; {} of 500 OK, exit {:?} {} ms after SIGTERM",
        (signalled - spawned).as_millis(),
        500 - failed.len(),
        status.code(),
        signalled.elapsed().as_millis()
    );
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert_eq!(status.code(), Some(0));
}

/// Runs vitalsd in a private mount namespace with its log (stderr, text, an access line per
/// call) on a 64 KiB tmpfs, fills the tmpfs once it serves, and waits for it to exit.
/// Arguments: vitalsd, its config, the log directory.
const FULL_LOG_SCRIPT: &str = r#"
set -eu
vitalsd=$1 config=$2 logdir=$3
mount -t tmpfs -o size=64k tmpfs "$logdir"
"$vitalsd" --config "$config" 2>"$logdir/vitalsd.log" &
pid=$!
for _ in $(seq 200); do grep -q serving "$logdir/vitalsd.log" && break; sleep 0.05; done
grep -m1 serving "$logdir/vitalsd.log"
dd if=/dev/zero of="$logdir/fill" bs=1k 2>/dev/null || true
echo "FULL $(df -k --output=avail "$logdir" | tail -1 | tr -d ' ') KiB free, log $(wc -c < "$logdir/vitalsd.log") bytes"
echo "PID $pid"
code=0; wait $pid || code=$?
echo "LOG $(wc -c < "$logdir/vitalsd.log") bytes"
echo "EXIT $code"
"#;

/// A full filesystem under the log directory does not stop serving: with stderr (the text
/// log, an access line per call) on a full 64 KiB tmpfs, 200 calls are all served, the
/// daemon stays up, and SIGTERM still stops it with exit 0.
#[tokio::test]
async fn full_log_filesystem() {
    let pki = Arc::new(TestPki::new());
    let dir = crate::support::write_config(
        &pki,
        "[log]\nformat = \"text\"\naccess = true\nlevel = \"info\"\n",
    );
    let logdir = dir.path().join("log");
    std::fs::create_dir(&logdir).unwrap();
    let script = NamespacedScript::spawn(
        FULL_LOG_SCRIPT,
        dir.path(),
        &dir.path().join("vitalsd.toml"),
        &logdir,
    );
    let next = |needle: &str| script.line_with(needle, Duration::from_secs(15));
    let serving = next("serving");
    let addr = serving
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .unwrap_or_else(|| panic!("no listen= in {serving}"))
        .trim_matches('"')
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let full = next("FULL");
    let pid: u32 = next("PID ").strip_prefix("PID ").unwrap().parse().unwrap();
    let dial = pki.dial(&addr);
    let mut echo = EchoClient::new(dial.connect().await.expect("connects"));
    let started = Instant::now();
    for i in 0..200 {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            echo.echo(EchoRequest {
                echo_message: format!("{i}"),
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("call {i} hung"))
        .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
        assert_eq!(reply.into_inner().echo_message, format!("{i}"));
    }
    // New connections too.
    let channel = dial.connect().await.expect("a new connection");
    EchoClient::new(channel)
        .echo(EchoRequest::default())
        .await
        .unwrap();
    let took = started.elapsed();
    let alive = Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(alive, "vitalsd died with its log filesystem full");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let log = next("LOG ");
    let exit = next("EXIT ");
    script.finish().await;
    eprintln!(
        "hostile: full_log_filesystem: {full}; 200 calls in {} ms; after: {log}; {exit}",
        took.as_millis()
    );
    assert!(full.contains("FULL 0 KiB free"), "{full}");
    assert_eq!(exit, "EXIT 0");
}
