use std::time::Duration;

use tonic::Code;
use vitals::proto::health::{
    HealthCheckRequest, HealthListRequest, health_check_response::ServingStatus,
};

use crate::support::TestDaemon;

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

/// Overall and per-service status are SERVING once the daemon says it serves.
#[tokio::test]
async fn check_reports_serving() {
    let daemon = TestDaemon::start("").await;
    let mut health = daemon.health().await;
    for service in [
        "",
        "grpc.health.v1.Health",
        "vitals.echo.v1.Echo",
        "vitals.metrics.v1.Metrics",
    ] {
        let status = health
            .check(req(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

/// Check of a service the server does not know is NOT_FOUND.
#[tokio::test]
async fn check_unknown_service_is_not_found() {
    let daemon = TestDaemon::start("").await;
    let err = daemon
        .health()
        .await
        .check(req("no.such.Service"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// List returns every service with its status, the overall one included.
#[tokio::test]
async fn list_returns_all_services() {
    let daemon = TestDaemon::start("").await;
    let list = daemon
        .health()
        .await
        .list(HealthListRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = list.statuses.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "",
            "grpc.health.v1.Health",
            "vitals.echo.v1.Echo",
            "vitals.metrics.v1.Metrics"
        ]
    );
    assert!(
        list.statuses
            .values()
            .all(|r| r.status() == ServingStatus::Serving)
    );
}

/// Watch of an unknown service sends SERVICE_UNKNOWN and keeps the stream open.
#[tokio::test]
async fn watch_unknown_service_stays_open() {
    let daemon = TestDaemon::start("").await;
    let mut stream = daemon
        .health()
        .await
        .watch(req("no.such.Service"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        next.is_err(),
        "the stream must stay open without news, got {next:?}"
    );
}

/// A watcher of the overall status sees SERVING, then NOT_SERVING when the daemon drains,
/// then the stream ends with UNAVAILABLE so the drain is not held up.
#[tokio::test]
async fn watch_sees_drain() {
    let mut daemon = TestDaemon::start("").await;
    let mut stream = daemon
        .health()
        .await
        .watch(req(""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    daemon.signal("TERM");
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap();
    assert_eq!(next.unwrap().unwrap().status(), ServingStatus::NotServing);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.success());
}

/// A threshold that fails turns the overall status NOT_SERVING and leaves services SERVING.
#[tokio::test]
async fn failing_threshold_turns_overall_not_serving() {
    // No filesystem has 99.9% free space.
    let daemon = TestDaemon::start("[health]\nmin_disk_free_percent = 99.9\n").await;
    let mut health = daemon.health().await;
    crate::support::eventually(Duration::from_secs(5), || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(req(""))
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .status();
            (status == ServingStatus::NotServing)
                .then_some(())
                .ok_or(format!("{status:?}"))
        }
    })
    .await;
    // Readiness names follow the checks; the liveness name only says the process answers.
    for (service, expected) in [
        ("vitals.echo.v1.Echo", ServingStatus::NotServing),
        ("vitals.metrics.v1.Metrics", ServingStatus::NotServing),
        ("grpc.health.v1.Health", ServingStatus::Serving),
    ] {
        let status = health
            .check(req(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, expected, "{service}");
    }
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("health checks fail") && l.contains("free"))
    );
}

/// The plaintext listener serves health to probes without certificates, and nothing else.
#[tokio::test]
async fn plaintext_listener_serves_health_only() {
    let daemon = TestDaemon::start("[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n").await;
    let addr = daemon
        .health_addr
        .expect("a plaintext listener")
        .to_string();
    let channel = vitals::client::Dial::plaintext(&addr)
        .connect()
        .await
        .unwrap();
    let mut health = vitals::proto::health::health_client::HealthClient::new(channel.clone());
    let status = health.check(req("")).await.unwrap().into_inner().status();
    assert_eq!(status, ServingStatus::Serving);
    let mut echo = vitals::proto::echo::echo_client::EchoClient::new(channel);
    let err = echo
        .echo(vitals::proto::echo::EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

/// `unix:PATH` and `unix-abstract:NAME` serve health over unix sockets: the file is made
/// with mode 0660, replacing a stale one a dead daemon left, and is removed at stop.
#[tokio::test]
async fn unix_socket_listeners_serve_health() {
    use crate::support::raw;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let name = format!("vitalsd-test-{}", std::process::id());
    let mut daemon = TestDaemon::start(&format!(
        "[health]\nplaintext_listen = [\"unix:{}\", \"unix-abstract:{name}\"]\n",
        path.display()
    ))
    .await;
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    raw::assert_health_serving(raw::over(stream).await.unwrap()).await;
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap()
    };
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(stream).unwrap();
    raw::assert_health_serving(raw::over(stream).await.unwrap()).await;
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(15)).await.success());
    assert!(!path.exists(), "the socket file is removed at stop");
}

/// A plaintext listener on a non-loopback address is served, with a warning at start
/// that says what it exposes.
#[tokio::test]
async fn exposed_plaintext_listener_is_warned_about() {
    let daemon = TestDaemon::start("[health]\nplaintext_listen = [\"0.0.0.0:0\"]\n").await;
    daemon
        .wait_for_log(|l| {
            l.contains("reachable from other hosts") && l.contains("without a certificate")
        })
        .await;
    let quiet = TestDaemon::start("[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n").await;
    assert!(
        !quiet
            .logs()
            .iter()
            .any(|l| l.contains("reachable from other hosts"))
    );
}

/// A failing check whose reason carries a changing number (the certificate's seconds left,
/// under `health.min_cert_validity`) is said once when it starts, not at every check (once
/// about 34,000 lines per device over a 48 h threshold).
#[tokio::test]
async fn a_failing_check_is_said_once_not_at_every_check() {
    let daemon = TestDaemon::start("[health]\nmin_cert_validity = \"1000d\"\n").await;
    daemon
        .wait_for_log(|l| l.contains("health checks fail"))
        .await;
    // The base config samples every second: a few more checks find the same failure.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let said = daemon
        .logs()
        .iter()
        .filter(|l| l.contains("health checks fail"))
        .count();
    assert_eq!(said, 1, "{:#?}", daemon.logs());
}

/// Each check is named on `/metrics` with 0 or 1 (`vitals_health_check_failing{check,
/// subject}`) and in the gRPC snapshot with its reason: a failing disk threshold on `/`
/// shows as `disk_free` on `/` with the free space, the other checks as passing.
#[tokio::test]
async fn failing_checks_are_named_in_metrics_and_the_snapshot() {
    use crate::support::prometheus::scraped;
    let daemon = TestDaemon::start("[health]\nmin_disk_free_percent = 99.99\n").await;
    let failing = r#"vitals_health_check_failing{check="disk_free",subject="/"}"#;
    let fresh = r#"vitals_health_check_failing{check="sample_fresh",subject=""}"#;
    crate::support::eventually(Duration::from_secs(5), || {
        let daemon = &daemon;
        async move {
            let got = (scraped(daemon, failing).await, scraped(daemon, fresh).await);
            (got == (Some(1.0), Some(0.0)))
                .then_some(())
                .ok_or(format!("{got:?}"))
        }
    })
    .await;
    let memory = r#"vitals_health_check_failing{check="memory_available",subject=""}"#;
    assert_eq!(scraped(&daemon, memory).await, Some(0.0));
    let overall = r#"vitals_health_serving{service=""}"#;
    assert_eq!(scraped(&daemon, overall).await, Some(0.0));

    let snapshot = daemon.snapshot().await;
    let disk = snapshot
        .health_checks
        .iter()
        .find(|c| c.check == "disk_free" && c.subject == "/")
        .unwrap_or_else(|| panic!("{:?}", snapshot.health_checks));
    assert!(disk.failing, "{disk:?}");
    assert!(
        disk.reason.starts_with("filesystem / has ") && disk.reason.ends_with("below 99.99%"),
        "{disk:?}"
    );
    let fresh = snapshot
        .health_checks
        .iter()
        .find(|c| c.check == "sample_fresh");
    assert!(
        fresh.is_some_and(|c| !c.failing && c.reason.is_empty()),
        "{fresh:?}"
    );
}

/// What tests/it's grpcio client prints: one `TARGET|OPTIONS|STATUS` line per call, where
/// STATUS is the serving status or `ERROR <code> <details>`.
const GRPCIO_CHECKS: &str = r#"
import sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

for target in sys.argv[1:]:
    for options in ([], [("grpc.default_authority", "localhost")]):
        with grpc.insecure_channel(target, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as e:
                status = "ERROR %s %s" % (e.code(), e.details())
        print("%s|%s|%s" % (target, options, status), flush=True)
"#;

/// grpcio (gRPC C-core, as gRPC C++ is) checks health over the unix-socket listeners in
/// each address form it takes: without options, when it names the socket path
/// (percent-encoded) as the authority, and with the README's `grpc.default_authority`
/// setting. Fails loudly when grpcio is missing (scripts/test.sh installs it).
#[tokio::test]
async fn grpcio_checks_health_over_unix_sockets() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1"])
        .status()
        .expect("python3 runs");
    assert!(
        probe.success(),
        "grpcio is missing: scripts/test.sh installs it (pip install grpcio grpcio-health-checking)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.sock");
    let name = format!("vitalsd-grpcio-{}", std::process::id());
    let _daemon = TestDaemon::start(&format!(
        "[health]\nplaintext_listen = [\"unix:{}\", \"unix-abstract:{name}\"]\n",
        path.display()
    ))
    .await;
    let targets = [
        format!("unix:{}", path.display()),
        format!("unix://{}", path.display()),
        format!("unix-abstract:{name}"),
    ];
    let script = dir.path().join("checks.py");
    std::fs::write(&script, GRPCIO_CHECKS).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .args(&targets)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    for line in lines {
        assert!(line.ends_with("|SERVING"), "{stdout}");
    }
}

/// A client that names the raw socket path as the authority (grpc-java does) is served
/// over the unix socket: its Check is answered SERVING, not reset with PROTOCOL_ERROR.
/// The request is written frame by frame, its header block in plain HPACK literals.
#[tokio::test]
async fn a_raw_socket_path_authority_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("health.sock");
    let _daemon = TestDaemon::start(&format!(
        "[health]\nplaintext_listen = [\"unix:{}\"]\n",
        path.display()
    ))
    .await;
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut block = Vec::new();
    let socket_path = path.display().to_string();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", socket_path.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // A literal field without indexing, new name, no Huffman coding.
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    request.extend(frame(4, 0, 0, &[]));
    request.extend(frame(1, 0x4, 1, &block));
    request.extend(frame(0, 0x1, 1, &[0, 0, 0, 0, 0]));
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream.write_all(&request).await.unwrap();
    // Read frames until the answer's message or a reset of stream 1.
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while buf.len() >= at + 9 {
                let len =
                    (buf[at] as usize) << 16 | (buf[at + 1] as usize) << 8 | buf[at + 2] as usize;
                if buf.len() < at + 9 + len {
                    break;
                }
                let (kind, stream_id) = (
                    buf[at + 3],
                    u32::from_be_bytes(buf[at + 5..at + 9].try_into().unwrap()),
                );
                let payload = buf[at + 9..at + 9 + len].to_vec();
                at += 9 + len;
                match (kind, stream_id) {
                    (0, 1) => return Ok(payload),
                    (3, 1) => return Err(format!("RST_STREAM {payload:?}")),
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("an answer within 5 s");
    // The gRPC message: HealthCheckResponse { status: SERVING (1) }.
    assert_eq!(answer, Ok(vec![0, 0, 0, 0, 2, 0x08, 0x01]));
}
