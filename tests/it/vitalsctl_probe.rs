//! `vitalsctl probe`: grpc_health_probe's flags and exit codes against the real daemon and
//! against servers that are not vitalsd; Watch, List and the sweep.

use std::time::Duration;

use crate::support::{
    TestDaemon, eventually,
    vitalsctl::{
        Background, Stub, assert_closed_politely, at, grpc_health_probe, mtls, refused_addr,
        silent_listener, vitalsctl,
    },
};

const HEALTH_LISTENER: &str = "[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n";

/// Exit 0 and `status: SERVING` over mutual TLS, and over the plaintext health listener
/// without TLS, overall and for one service.
#[tokio::test]
async fn serving_exits_0() {
    let daemon = TestDaemon::start(HEALTH_LISTENER).await;
    let run = vitalsctl(&at(&daemon, &["probe", "-service", "vitals.echo.v1.Echo"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.trim(), "status: SERVING");
    let plain = daemon.health_addr.unwrap().to_string();
    let run = vitalsctl(&["probe", "-addr", &plain]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.trim(), "status: SERVING");
}

/// `-addr=x`, `--addr x`, `-addr x`, `--addr=x`, booleans as `-tls=true`, and the
/// grpc_health_probe name all reach the same server.
#[tokio::test]
async fn flag_spellings() {
    let daemon = TestDaemon::start(HEALTH_LISTENER).await;
    let plain = daemon.health_addr.unwrap().to_string();
    let spellings = [
        vec![format!("-addr={plain}")],
        vec!["--addr".into(), plain.clone()],
        vec!["-addr".into(), plain.clone()],
        vec![
            format!("--addr={plain}"),
            "-tls=false".into(),
            "--rpc-timeout=2s".into(),
        ],
        vec![
            format!("-addr={plain}"),
            "-service=grpc.health.v1.Health".into(),
            "-v".into(),
        ],
    ];
    for spelling in spellings {
        let mut args = vec!["probe".to_string()];
        args.extend(spelling.iter().cloned());
        let run = vitalsctl(&args).await;
        assert_eq!(run.code, Some(0), "{spelling:?}: {run:?}");
    }
    let mut tls = vec![
        "probe".to_string(),
        format!("-addr={}", daemon.addr),
        "-tls=true".into(),
    ];
    tls.extend(mtls(&daemon).into_iter().skip(1));
    assert_eq!(vitalsctl(&tls).await.code, Some(0));
}

/// Exit 1 for invalid arguments (with grpc_health_probe's message) and for TLS files that
/// cannot be read.
#[tokio::test]
async fn invalid_arguments_exit_1() {
    let cases: [(&[&str], &str); 6] = [
        (&["probe"], "-addr not specified"),
        (
            &["probe", "-addr", "h:1", "-tls-ca-cert", "ca.crt"],
            "specified -tls-ca-cert without specifying -tls",
        ),
        (
            &["probe", "-addr", "h:1", "-tls", "-tls-client-cert", "c.crt"],
            "without specifying -tls-client-key",
        ),
        (
            &["probe", "-addr", "h:1", "-connect-timeout=0s"],
            "-connect-timeout must be greater than zero",
        ),
        (
            &[
                "probe",
                "-addr",
                "h:1",
                "-tls",
                "-tls-no-verify",
                "-tls-ca-cert",
                "x",
            ],
            "cannot specify -tls-ca-cert with -tls-no-verify",
        ),
        (
            &[
                "probe",
                "-addr",
                "h:1",
                "-tls",
                "-tls-ca-cert",
                "/nonexistent/ca.crt",
            ],
            "failed to initialize tls credentials",
        ),
    ];
    for (args, message) in cases {
        let run = vitalsctl(args).await;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
}

/// Exit 2 when nothing listens (after trying for the whole -connect-timeout, with
/// grpc_health_probe's timeout message and the last error below it); when the server does
/// not speak HTTP/2 (the mTLS port probed in plaintext); and when the handshake does not
/// finish within -connect-timeout (which is kept).
#[tokio::test]
async fn connection_failures_exit_2() {
    let refused = refused_addr();
    let run = vitalsctl(&["probe", "-addr", &refused]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.stderr.lines().next(),
        Some(format!("timeout: failed to connect service \"{refused}\" within 1s").as_str()),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);

    let daemon = TestDaemon::start("").await;
    let run = vitalsctl(&["probe", "-addr", &daemon.addr.to_string()]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("did not answer in HTTP/2"),
        "{}",
        run.stderr
    );

    let (_listener, silent) = silent_listener();
    for tls in [&["-tls", "-tls-no-verify"][..], &[]] {
        let mut args = vec!["probe", "-addr", &silent, "-connect-timeout", "300ms"];
        args.extend(tls);
        let run = vitalsctl(&args).await;
        assert_eq!(run.code, Some(2), "{tls:?}: {run:?}");
        assert!(
            run.stderr.contains("timeout: failed to connect service")
                && run.stderr.contains("within 300ms"),
            "{}",
            run.stderr
        );
        assert!(run.took < Duration::from_secs(3), "{:?}", run.took);
    }
}

/// Exit 3 when the server has no health service (an HTTP/2 server answering
/// UNIMPLEMENTED), when the service is unknown (NOT_FOUND), and when the answer does not
/// come within -rpc-timeout.
#[tokio::test]
async fn rpc_failures_exit_3() {
    let stub = Stub::start(&[("grpc-status", "12"), ("grpc-message", "unknown service")]).await;
    let run = vitalsctl(&["probe", "-addr", &stub.addr]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr
            .contains("does not implement the grpc health protocol"),
        "{}",
        run.stderr
    );
    assert_eq!(stub.calls(), 1);

    let daemon = TestDaemon::start("").await;
    let run = vitalsctl(&at(&daemon, &["probe", "-service", "no.such.Service"])).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("code = NotFound"), "{}", run.stderr);

    let slow = Stub::slow(&[("grpc-status", "0")], Duration::from_secs(5)).await;
    let run = vitalsctl(&["probe", "-addr", &slow.addr, "-rpc-timeout", "300ms"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "timeout: health rpc did not complete within 300ms"
    );
    assert!(run.took < Duration::from_secs(2), "{:?}", run.took);
}

/// Exit 4 with grpc_health_probe's message once a failing threshold makes the daemon
/// NOT_SERVING.
#[tokio::test]
async fn not_serving_exits_4() {
    let daemon = TestDaemon::start("[health]\nmin_disk_free_percent = 99.9\n").await;
    let args = at(&daemon, &["probe"]);
    eventually(Duration::from_secs(5), || {
        let args = args.clone();
        async move {
            let run = vitalsctl(&args).await;
            (run.code == Some(4))
                .then_some(())
                .ok_or(format!("{run:?}"))
        }
    })
    .await;
    let run = vitalsctl(&args).await;
    assert_eq!(
        run.stderr.trim(),
        "service unhealthy (responded with \"NOT_SERVING\")"
    );
}

/// `-tls` without a client certificate is refused by vitalsd (it requires one) after the
/// TLS handshake: a connection failure that says a certificate may be missing.
#[tokio::test]
async fn server_only_tls_is_refused_by_vitalsd() {
    let daemon = TestDaemon::start("").await;
    let ca = daemon.pki.path("ca.crt").display().to_string();
    let args = [
        "probe",
        "-addr",
        &daemon.addr.to_string(),
        "-tls",
        "-tls-ca-cert",
        &ca,
    ];
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("no client certificate was offered"),
        "{}",
        run.stderr
    );
}

/// The probe ends its connection politely: the daemon sees a GOAWAY and a clean close,
/// and logs no IO error or reset for it.
#[tokio::test]
async fn closes_connection_gracefully() {
    let daemon = TestDaemon::start("[log]\nlevel = \"debug\"\n").await;
    for _ in 0..3 {
        assert_eq!(vitalsctl(&at(&daemon, &["probe"])).await.code, Some(0));
    }
    assert_closed_politely(&daemon, 3).await;
}

/// `--watch` prints SERVING, then NOT_SERVING when the daemon drains, and ends (exit 3)
/// when the server ends the stream; a watch of an unknown service prints SERVICE_UNKNOWN.
#[tokio::test]
async fn watch_follows_drain() {
    let mut daemon = TestDaemon::start("").await;
    let overall = Background::start(&at(&daemon, &["probe", "--watch"]));
    let unknown = Background::start(&at(
        &daemon,
        &["probe", "--watch", "-service", "no.such.Service"],
    ));
    eventually(Duration::from_secs(5), || {
        let (a, b) = (overall.lines(), unknown.lines());
        async move {
            let seen = a.iter().any(|l| l.ends_with("status: SERVING"))
                && b.iter().any(|l| l.contains("status: SERVICE_UNKNOWN"));
            seen.then_some(()).ok_or(format!("{a:?} {b:?}"))
        }
    })
    .await;
    daemon.signal("TERM");
    let (code, lines, stderr) = overall.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(3), "{lines:?} {stderr}");
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(statuses, ["SERVING", "NOT_SERVING"], "{lines:?}");
    assert!(
        stderr.contains("watch ended") && stderr.contains("last status NOT_SERVING"),
        "{stderr}"
    );
    let (code, _, _) = unknown.finish(Duration::from_secs(10)).await;
    assert_eq!(code, Some(3));
    assert!(daemon.wait_exit(Duration::from_secs(10)).await.success());
}

/// `--list` prints every service with its status, as a table or JSON.
#[tokio::test]
async fn list_prints_every_service() {
    let daemon = TestDaemon::start("").await;
    let run = vitalsctl(&at(&daemon, &["probe", "--list"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("(overall)") && l.ends_with("SERVING"))
    );
    assert!(run.stdout.contains("vitals.echo.v1.Echo"), "{}", run.stdout);
    let json = vitalsctl(&at(&daemon, &["probe", "--list", "--json"]))
        .await
        .json();
    assert_eq!(json["vitals.metrics.v1.Metrics"], "SERVING");
    assert_eq!(json[""], "SERVING");
}

/// A sweep over three daemons with one down reports that one, as JSON and as a table
/// (targets from a file), and exits 2.
#[tokio::test]
async fn sweep_reports_the_one_down() {
    let pki = std::sync::Arc::new(crate::support::TestPki::new());
    let a = TestDaemon::builder().pki(pki.clone()).start().await;
    let b = TestDaemon::builder().pki(pki.clone()).start().await;
    let c = TestDaemon::builder().pki(pki.clone()).start().await;
    let down = b.addr.to_string();
    drop(b);
    let targets = [a.addr.to_string(), down.clone(), c.addr.to_string()];
    let mut args = vec!["probe".to_string(), "--json".into()];
    args.extend(mtls(&a));
    args.extend(targets.iter().cloned());
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let json = run.json();
    let statuses: Vec<&str> = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["SERVING", "UNREACHABLE", "SERVING"], "{json}");
    assert_eq!(json["targets"][1]["target"], down.as_str());
    assert_eq!(json["unhealthy"], 1);

    let file = pki.path("fleet.txt");
    std::fs::write(&file, format!("# fleet\n{}\n", targets.join("\n"))).unwrap();
    let mut args = vec![
        "probe".to_string(),
        "--targets".into(),
        file.display().to_string(),
    ];
    args.extend(mtls(&a));
    let run = vitalsctl(&args).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let line = run.stdout.lines().find(|l| l.starts_with(&down)).unwrap();
    assert!(line.contains("UNREACHABLE"), "{}", run.stdout);
    assert!(run.stdout.contains("2 of 3 serving"), "{}", run.stdout);
}

/// Named grpc_health_probe, vitalsctl answers as it does: `status: SERVING` on stderr (Go's
/// log) with nothing on stdout, `-h` with the usage on stderr and exit 1, `-version` on
/// stdout with exit 0 before `-addr` is asked for. As `vitalsctl probe`, the status and
/// the help go to stdout and help exits 0.
#[tokio::test]
async fn grpc_health_probe_streams_help_and_version() {
    let daemon = TestDaemon::start(HEALTH_LISTENER).await;
    let plain = daemon.health_addr.unwrap().to_string();
    let run = grpc_health_probe(&[format!("-addr={plain}")]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        (run.stdout.as_str(), run.stderr.trim()),
        ("", "status: SERVING")
    );
    let run = vitalsctl(&["probe".to_string(), format!("-addr={plain}")]).await;
    assert_eq!(
        (run.stdout.trim(), run.stderr.as_str()),
        ("status: SERVING", "")
    );

    for help in ["-h", "-help", "--help"] {
        let run = grpc_health_probe(&[help]).await;
        assert_eq!(run.code, Some(1), "{help}: {run:?}");
        assert!(
            run.stdout.is_empty() && run.stderr.contains("-addr"),
            "{help}: {run:?}"
        );
        let run = vitalsctl(&["probe", help]).await;
        assert_eq!(run.code, Some(0), "{help}: {run:?}");
        assert!(run.stdout.contains("-addr"), "{help}: {run:?}");
    }
    let version = format!("vitalsctl {}", env!("CARGO_PKG_VERSION"));
    for run in [
        grpc_health_probe(&["-version"]).await,
        vitalsctl(&["probe", "-version"]).await,
        vitalsctl(&["--version"]).await,
    ] {
        assert_eq!(
            (run.code, run.stdout.trim()),
            (Some(0), version.as_str()),
            "{run:?}"
        );
    }
}

/// Local probes over the daemon's unix-socket health listeners, in every spelling grpc-go
/// and grpc_health_probe accept: `unix:/path`, `unix:///path`, `unix-abstract:name`; the
/// same through the grpc_health_probe name; TLS over a unix socket is refused (exit 1).
#[tokio::test]
async fn probes_over_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.sock");
    let name = format!("vitalsctl-test-{}", std::process::id());
    let _daemon = TestDaemon::start(&format!(
        "[health]\nplaintext_listen = [\"unix:{}\", \"unix-abstract:{name}\"]\n",
        path.display()
    ))
    .await;
    for addr in [
        format!("unix:{}", path.display()),
        format!("unix://{}", path.display()),
        format!("unix-abstract:{name}"),
    ] {
        let run = vitalsctl(&["probe".to_string(), format!("-addr={addr}")]).await;
        assert_eq!(run.code, Some(0), "{addr}: {run:?}");
        assert_eq!(run.stdout.trim(), "status: SERVING", "{addr}");
        let run = grpc_health_probe(&[
            format!("-addr={addr}"),
            "-service=grpc.health.v1.Health".into(),
        ])
        .await;
        assert_eq!(run.code, Some(0), "{addr}: {run:?}");
        let run = vitalsctl(&[
            "probe".to_string(),
            "--list".into(),
            format!("-addr={addr}"),
        ])
        .await;
        assert_eq!(run.code, Some(0), "{addr}: {run:?}");
    }
    let run = vitalsctl(&[
        "probe".to_string(),
        format!("-addr=unix:{}", path.display()),
        "-tls".into(),
    ])
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("TLS over a unix socket"), "{run:?}");
    let missing = dir.path().join("nope.sock");
    let run = vitalsctl(&[
        "probe".to_string(),
        format!("-addr=unix:{}", missing.display()),
    ])
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
}

/// As grpc_health_probe (main.go: a blocking dial under -connect-timeout, grpc-go's
/// connection backoff between attempts), a probe started ~500 ms before the daemon listens
/// keeps trying and prints `status: SERVING` after gRPC's first backoff (1 s ±20%), well
/// within -connect-timeout.
#[tokio::test]
async fn connect_retries_until_the_daemon_listens() {
    let addr = refused_addr();
    let dropin = format!("[health]\nplaintext_listen = [\"{addr}\"]\n");
    // The liveness name answers SERVING from the first accepted connection on, so the test
    // measures the retries, not the daemon's first sample.
    let args = [
        "probe".to_string(),
        format!("-addr={addr}"),
        "-connect-timeout=10s".into(),
        "-service=grpc.health.v1.Health".into(),
    ];
    let (run, _daemon) = tokio::join!(vitalsctl(&args), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        TestDaemon::start(&dropin).await
    });
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.trim(), "status: SERVING");
    assert!(run.took >= Duration::from_millis(750), "{:?}", run.took);
    assert!(run.took < Duration::from_secs(4), "{:?}", run.took);
}

/// grpc_health_probe's connection messages, exit codes and timing, from its main.go: with
/// nothing listening it keeps trying until -connect-timeout (exit 2 no sooner) and says
/// `timeout: failed to connect service "ADDR" within 300ms` (the duration as Go prints it),
/// that line alone under the drop-in name and with the attempts and last error below it
/// with -v; `vitalsctl probe` prints the same line first. The RPC timeout reads the same
/// way (`within 1.5s`).
#[tokio::test]
async fn connection_messages_follow_grpc_health_probe() {
    let refused = refused_addr();
    let ms = Duration::from_millis;
    for (timeout, printed, floor) in [("300ms", "300ms", ms(300)), ("1500ms", "1.5s", ms(1500))] {
        let args = [
            format!("-addr={refused}"),
            format!("-connect-timeout={timeout}"),
        ];
        let run = grpc_health_probe(&args).await;
        let want = format!("timeout: failed to connect service \"{refused}\" within {printed}");
        assert_eq!(
            (run.code, run.stderr.trim()),
            (Some(2), want.as_str()),
            "{run:?}"
        );
        assert_eq!(run.stdout, "");
        assert!(run.took >= floor, "{timeout}: {:?}", run.took);
        assert!(
            run.took < floor + Duration::from_secs(1),
            "{timeout}: {:?}",
            run.took
        );
    }
    let mut verbose = vec![
        format!("-addr={refused}"),
        "-connect-timeout=1500ms".to_string(),
        "-v".into(),
    ];
    let run = grpc_health_probe(&verbose).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("2 attempts; the last: ") && last.contains("Connection refused"),
        "{}",
        run.stderr
    );
    verbose.insert(0, "probe".into());
    verbose.pop();
    let run = vitalsctl(&verbose).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.stderr.lines().next().unwrap_or_default(),
        format!("timeout: failed to connect service \"{refused}\" within 1.5s")
    );

    let slow = Stub::slow(&[("grpc-status", "0")], Duration::from_secs(5)).await;
    let run =
        grpc_health_probe(&[format!("-addr={}", slow.addr), "-rpc-timeout=1.5s".into()]).await;
    assert_eq!(
        (run.code, run.stderr.trim()),
        (Some(3), "timeout: health rpc did not complete within 1.5s")
    );
}
