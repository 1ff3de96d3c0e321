//! `vitalsctl echo`: metadata out and back, retries as gRPC's A6 defines them (counted by
//! the daemon's own statistics), and balancing over several daemons.

use std::{sync::Arc, time::Duration};

use crate::support::{
    TestDaemon, TestPki, eventually,
    vitalsctl::{Background, Stub, echo_stats, mtls, vitalsctl},
};

/// `echo` with the mutual TLS flags of `daemon` and `--addr` for each of `daemons`.
fn echo_args(daemons: &[&TestDaemon], args: &[&str]) -> Vec<String> {
    let mut all = vec!["echo".to_string()];
    for d in daemons {
        all.extend(["--addr".to_string(), d.addr.to_string()]);
    }
    all.extend(mtls(daemons[0]).into_iter().skip(1));
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

async fn three_daemons() -> [TestDaemon; 3] {
    let pki = Arc::new(TestPki::new());
    [
        TestDaemon::builder().pki(pki.clone()).start().await,
        TestDaemon::builder().pki(pki.clone()).start().await,
        TestDaemon::builder().pki(pki).start().await,
    ]
}

/// The reply comes back with the metadata echoed as a header and as a trailer, shown
/// apart; a name that resolves (localhost) works and its certificate name is checked.
#[tokio::test]
async fn prints_headers_reply_and_trailers() {
    let daemon = TestDaemon::start("").await;
    let mut args = vec![
        "echo".to_string(),
        "--addr".into(),
        format!("localhost:{}", daemon.addr.port()),
    ];
    args.extend(mtls(&daemon));
    args.extend(
        [
            "hello",
            "world",
            "-H",
            "x-id: 42",
            "--echo-header",
            "x-id",
            "--echo-trailer",
            "x-id",
            "--size",
            "100",
        ]
        .map(String::from),
    );
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.contains(&"< x-id: 42"), "{lines:?}");
    assert!(lines.contains(&"hello world"), "{lines:?}");
    assert!(lines.contains(&"(payload: 100 bytes)"), "{lines:?}");
    assert!(lines.contains(&"<< x-id: 42"), "{lines:?}");
    assert!(
        lines.iter().position(|l| *l == "< x-id: 42")
            < lines.iter().position(|l| *l == "hello world")
            && lines.iter().position(|l| *l == "hello world")
                < lines.iter().position(|l| *l == "<< x-id: 42"),
        "{lines:?}"
    );
}

/// The status knob fails the first two attempts; with three attempts allowed the call
/// succeeds on the third (the daemon saw grpc-previous-rpc-attempts), each attempt logged
/// with -v; with two it fails after two.
#[tokio::test]
async fn retries_until_success_within_max_attempts() {
    let daemon = TestDaemon::start("").await;
    let knobs = [
        "x",
        "--status",
        "UNAVAILABLE",
        "--fail-attempts",
        "2",
        "--initial-backoff",
        "10ms",
        "-v",
    ];
    let mut args = echo_args(&[&daemon], &knobs);
    args.extend(["--max-attempts", "3"].map(String::from));
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for n in 1..=3 {
        assert!(
            run.stderr
                .contains(&format!("attempt {n} to {}", daemon.addr)),
            "{}",
            run.stderr
        );
    }
    let (calls, codes) = echo_stats(&daemon).await;
    assert_eq!(calls, 3);
    assert_eq!((codes["UNAVAILABLE"], codes["OK"]), (2, 1), "{codes:?}");

    let mut args = echo_args(&[&daemon], &knobs);
    args.extend(["--max-attempts", "2"].map(String::from));
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("all 2 attempts used"), "{}", run.stderr);
    assert_eq!(echo_stats(&daemon).await.0, 5);
}

/// A code the policy does not list is not retried.
#[tokio::test]
async fn non_retryable_code_is_not_retried() {
    let daemon = TestDaemon::start("").await;
    let args = echo_args(
        &[&daemon],
        &[
            "x",
            "--status",
            "INVALID_ARGUMENT",
            "--retry-on",
            "UNAVAILABLE",
            "--max-attempts",
            "5",
        ],
    );
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("INVALID_ARGUMENT is not retryable"),
        "{}",
        run.stderr
    );
    assert_eq!(echo_stats(&daemon).await.0, 1);
}

/// Server pushback sets the wait before the retry: a policy whose own backoff is at most
/// 1 ms waits the 700 ms the server asked for (without pushback it backs off 1 ms).
#[tokio::test]
async fn pushback_is_honoured() {
    let daemon = TestDaemon::start("").await;
    let policy = r#"{"methodConfig": [{"name": [{"service": "vitals.echo.v1.Echo"}], "retryPolicy": {
        "maxAttempts": 2, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
        "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;
    let knobs = [
        "x",
        "--status",
        "UNAVAILABLE",
        "--fail-attempts",
        "1",
        "--retry-policy",
        policy,
    ];
    let mut args = echo_args(&[&daemon], &knobs);
    args.extend(["--pushback", "700ms", "-v"].map(String::from));
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("retrying in 700.0ms (server pushback)"),
        "{}",
        run.stderr
    );
    assert!(run.took >= Duration::from_millis(700), "{:?}", run.took);

    let mut args = echo_args(&[&daemon], &knobs);
    args.push("-v".into());
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let waited = run
        .stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("* retrying in ")?
                .strip_suffix("ms (backoff)")
        })
        .unwrap_or_else(|| panic!("no backoff logged: {}", run.stderr));
    assert!(waited.parse::<f64>().unwrap() <= 1.0, "{waited}");
    assert_eq!(echo_stats(&daemon).await.0, 4);
}

/// A negative pushback means "do not retry": one call only, whatever the policy allows.
#[tokio::test]
async fn negative_pushback_stops_retries() {
    let stub = Stub::start(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]).await;
    let args = [
        "echo",
        "--plaintext",
        "--addr",
        &stub.addr,
        "x",
        "--max-attempts",
        "5",
    ];
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("pushback `-1` asks for no retry"),
        "{}",
        run.stderr
    );
    assert_eq!(stub.calls(), 1);
}

/// How long the failed call took, as vitalsctl reports it ("N attempt(s) in X ms").
fn reported(stderr: &str) -> Duration {
    let ms = stderr
        .split(" attempt(s) in ")
        .nth(1)
        .and_then(|rest| rest.split("ms;").next())
        .and_then(|ms| ms.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no duration reported: {stderr}"));
    Duration::from_secs_f64(ms / 1e3)
}

/// The deadline covers all attempts: retries stop when the next would start past it, and
/// a slow attempt ends at it.
#[tokio::test]
async fn deadline_covers_all_attempts() {
    let daemon = TestDaemon::start("").await;
    let knobs = [
        "x",
        "--status",
        "UNAVAILABLE",
        "--pushback",
        "300ms",
        "--max-attempts",
        "5",
        "--timeout",
        "1s",
    ];
    let run = vitalsctl(&echo_args(&[&daemon], &knobs)).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    // Either the next attempt would start past the deadline, or (on a loaded machine) the
    // last one was still running at it.
    assert!(
        run.stderr
            .contains("the deadline would pass before attempt")
            || run
                .stderr
                .contains("the deadline passed during the attempt"),
        "{}",
        run.stderr
    );
    // Attempts go out at 0, 0.3, 0.6 and 0.9 s (fewer when slow); a fifth would be at 1.2 s.
    let calls = echo_stats(&daemon).await.0;
    assert!((2..=4).contains(&calls), "{calls} attempts");
    let took = reported(&run.stderr);
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    let slow = [
        "x",
        "--delay",
        "3s",
        "--timeout",
        "500ms",
        "--retry-on",
        "DEADLINE_EXCEEDED",
    ];
    let run = vitalsctl(&echo_args(&[&daemon], &slow)).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("DEADLINE_EXCEEDED"), "{}", run.stderr);
    let took = reported(&run.stderr);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert!(run.took < Duration::from_secs(3), "{:?}", run.took);
}

/// round_robin spreads 30 calls over three daemons, each within one of 10, as each
/// daemon's own statistics count them.
#[tokio::test]
async fn round_robin_spreads_calls() {
    let daemons = three_daemons().await;
    let refs: Vec<&TestDaemon> = daemons.iter().collect();
    let run = vitalsctl(&echo_args(
        &refs,
        &["x", "--lb", "round_robin", "--count", "30"],
    ))
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for daemon in &daemons {
        let calls = echo_stats(daemon).await.0;
        assert!((9..=11).contains(&calls), "{calls} of 30: {}", run.stdout);
    }
}

/// pick_first sends every call to the first daemon; when it stops mid-run, the calls move
/// to the second (none fail, none reach the third).
#[tokio::test]
async fn pick_first_sends_all_to_first_then_fails_over() {
    let [mut a, b, c] = three_daemons().await;
    let run = vitalsctl(&echo_args(&[&a, &b, &c], &["x", "--count", "6"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(echo_stats(&a).await.0, 6);
    assert_eq!((echo_stats(&b).await.0, echo_stats(&c).await.0), (0, 0));

    let args = echo_args(
        &[&a, &b, &c],
        &[
            "x",
            "--count",
            "30",
            "--interval",
            "40ms",
            "--lb",
            "pick_first",
        ],
    );
    let running = Background::start(&args);
    eventually(Duration::from_secs(5), || {
        let lines = running.lines();
        async move { (lines.len() >= 5).then_some(()).ok_or(format!("{lines:?}")) }
    })
    .await;
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(10)).await.success());
    let (code, lines, stderr) = running.finish(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{lines:#?} {stderr}");
    let answered = |addr: String| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{addr}: seq=")))
            .count() as u64
    };
    let (on_a, on_b) = (answered(a.addr.to_string()), answered(b.addr.to_string()));
    assert_eq!(on_a + on_b, 30, "{lines:#?}");
    assert!(on_a >= 5 && on_b >= 1, "{on_a} on a, {on_b} on b");
    assert_eq!(echo_stats(&b).await.0, on_b);
    assert_eq!(echo_stats(&c).await.0, 0);
}
