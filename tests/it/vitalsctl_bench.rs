//! `vitalsctl bench` and `vitalsctl metrics` against the real daemon: what the load
//! generator reports is what the daemon counted.

use std::time::Duration;

use crate::support::{
    TestDaemon, eventually,
    vitalsctl::{Background, assert_closed_politely, echo_stats, mtls, vitalsctl},
};

fn bench_args(daemon: &TestDaemon, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        "bench".to_string(),
        "--addr".into(),
        daemon.addr.to_string(),
        "--json".into(),
    ];
    all.extend(mtls(daemon));
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// A count-limited run over 2 connections x 8 streams makes exactly that many calls, all
/// OK, as the daemon's statistics count them, and reports latency and its own CPU.
#[tokio::test]
async fn bench_counts_match_daemon() {
    let daemon = TestDaemon::start("").await;
    let run = vitalsctl(&bench_args(
        &daemon,
        &[
            "--requests",
            "2000",
            "--connections",
            "2",
            "--streams",
            "8",
            "--size",
            "4KiB",
        ],
    ))
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.json();
    assert_eq!(report["requests"], 2000, "{report}");
    assert_eq!(report["ok"], 2000, "{report}");
    assert_eq!(report["in_flight"], 16);
    assert_eq!(report["transport"], "mutual TLS");
    let (calls, codes) = echo_stats(&daemon).await;
    assert_eq!((calls, codes["OK"]), (2000, 2000));
    let latency = &report["latency_us"];
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(latency[q].as_f64().unwrap() > 0.0, "{report}");
    }
    assert!(latency["p50"].as_f64() <= latency["p99"].as_f64());
    assert!(report["requests_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["cpu"]["seconds"].as_f64().unwrap() > 0.0, "{report}");
}

/// A timed run with a warmup counts errors by status code: the daemon saw exactly the
/// warmup calls plus the measured ones, all failed with the code asked for.
#[tokio::test]
async fn bench_duration_warmup_and_errors_by_code() {
    let daemon = TestDaemon::start("").await;
    let args = [
        "--duration",
        "500ms",
        "--warmup",
        "200ms",
        "--streams",
        "4",
        "--status",
        "UNAVAILABLE",
    ];
    let run = vitalsctl(&bench_args(&daemon, &args)).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.json();
    let measured = report["requests"].as_u64().unwrap();
    let warmup = report["warmup_requests"].as_u64().unwrap();
    assert!(measured > 0 && warmup > 0, "{report}");
    assert_eq!(report["errors"]["UNAVAILABLE"], measured, "{report}");
    assert_eq!(report["ok"], 0);
    let seconds = report["seconds"].as_f64().unwrap();
    assert!((0.5..1.5).contains(&seconds), "{report}");
    let (calls, codes) = echo_stats(&daemon).await;
    assert_eq!(calls, measured + warmup);
    assert_eq!(codes["UNAVAILABLE"], measured + warmup);
}

/// The load generator ends its raw HTTP/2 connections politely too: the daemon sees a
/// GOAWAY and a clean close for each, and no reset.
#[tokio::test]
async fn bench_closes_connections_politely() {
    let daemon = TestDaemon::start("[log]\nlevel = \"debug\"\n").await;
    let args = ["--requests", "40", "--connections", "3", "--streams", "2"];
    let run = vitalsctl(&bench_args(&daemon, &args)).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_closed_politely(&daemon, 3).await;
}

/// `metrics` prints one snapshot as a table or JSON, and `--watch` keeps printing them.
#[tokio::test]
async fn metrics_snapshot_and_watch() {
    let daemon = TestDaemon::start("").await;
    let mut args = vec![
        "metrics".to_string(),
        "--addr".into(),
        daemon.addr.to_string(),
    ];
    args.extend(mtls(&daemon));
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("host "), "{}", run.stdout);
    args.push("--json".into());
    let json = vitalsctl(&args).await.json();
    assert_eq!(json["process"]["pid"], daemon.pid());
    args.extend(["--watch".into(), "1s".into()]);
    let watch = Background::start(&args);
    eventually(Duration::from_secs(8), || {
        let lines = watch.lines();
        async move {
            (lines.len() >= 2)
                .then_some(())
                .ok_or(format!("{} snapshots", lines.len()))
        }
    })
    .await;
    for line in watch.lines() {
        let snapshot: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(snapshot["host"]["hostname"].is_string(), "{line}");
    }
}
