//! vitalsd as a systemd service: the notify protocol on a socket the test owns, socket
//! activation through systemd-socket-activate, the unit files as systemd-analyze sees them,
//! and journald (a real one, in a private mount namespace). These need systemd's tools;
//! scripts/test.sh installs them, and a missing tool fails the test rather than skipping it.

use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use vitals::proto::{echo::EchoRequest, health::HealthCheckRequest};

use crate::support::{NamespacedScript, TestDaemon, TestPki, free_port, require, write_config};

/// A NOTIFY_SOCKET the test owns.
pub(crate) struct NotifySocket {
    _dir: tempfile::TempDir,
    pub(crate) path: String,
    socket: UnixDatagram,
}

impl NotifySocket {
    pub(crate) fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify").display().to_string();
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            path,
            socket,
        }
    }

    /// The next message, waiting at most `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Reads messages until one contains `what`; returns it and the WATCHDOG pings seen.
    pub(crate) fn until(&self, what: &str, limit: Duration) -> (String, usize) {
        let deadline = Instant::now() + limit;
        let mut pings = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .next(left.max(Duration::from_millis(1)))
                .unwrap_or_else(|| panic!("no `{what}` within {limit:?}"));
            if message.contains(what) {
                return (message, pings);
            }
            pings += usize::from(message == "WATCHDOG=1");
        }
    }
}

/// READY=1 comes once the daemon serves, the watchdog is pinged at half its period,
/// a reload is RELOADING=1 then READY=1 (with the reason on STATUS when rejected), and a
/// stop says STOPPING=1.
#[tokio::test]
async fn notify_protocol() {
    let notify = NotifySocket::new();
    let mut daemon = TestDaemon::builder()
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .start()
        .await;
    let (ready, _) = notify.until("READY=1", Duration::from_secs(5));
    assert!(ready.contains("STATUS=serving on 127.0.0.1:"), "{ready}");
    // READY was sent after the listener serves: a call made now succeeds.
    daemon
        .health()
        .await
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // Pings every 200 ms: about five in a second.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(1) {
        if notify.next(Duration::from_millis(300)).as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        (3..=7).contains(&pings),
        "{pings} watchdog pings in one second"
    );

    daemon.signal("HUP");
    notify.until("RELOADING=1", Duration::from_secs(5));
    let (ready, _) = notify.until("READY=1", Duration::from_secs(5));
    assert!(!ready.contains("rejected"), "{ready}");

    daemon.rewrite_dropin("[server]\nlisten = [\"not an address\"]\n");
    daemon.signal("HUP");
    notify.until("RELOADING=1", Duration::from_secs(5));
    let (ready, _) = notify.until("READY=1", Duration::from_secs(5));
    assert!(
        ready.contains("last reload rejected") && ready.contains("server.listen"),
        "{ready}"
    );

    daemon.signal("TERM");
    notify.until("STOPPING=1", Duration::from_secs(5));
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.success());
}

/// STATUS= follows readiness with its reasons: READY=1 says NOT_SERVING and why when a
/// check fails on the first sample; a reload that lifts the threshold brings `serving on`,
/// and one that sets it again brings the reason back, each as soon as health judges it.
#[tokio::test]
async fn status_follows_readiness() {
    let notify = NotifySocket::new();
    let failing = "[health]\nmin_disk_free_percent = 99.99\n";
    let daemon = TestDaemon::builder()
        .env("NOTIFY_SOCKET", &notify.path)
        .dropin(failing)
        .start()
        .await;
    let (ready, _) = notify.until("READY=1", Duration::from_secs(5));
    let addr = daemon.addr.to_string();
    assert!(
        ready.contains("STATUS=NOT_SERVING: filesystem / has ")
            && ready.contains("% free, below 99.99% (listening on ")
            && ready.ends_with(&format!("{addr})")),
        "{ready}"
    );

    daemon.rewrite_dropin("");
    daemon.signal("HUP");
    notify.until("RELOADING=1", Duration::from_secs(5));
    let (serving, _) = notify.until(&format!("STATUS=serving on {addr}"), Duration::from_secs(5));
    assert!(!serving.contains("NOT_SERVING"), "{serving}");

    daemon.rewrite_dropin(failing);
    daemon.signal("HUP");
    let (again, _) = notify.until(
        "STATUS=NOT_SERVING: filesystem / has",
        Duration::from_secs(5),
    );
    assert!(again.contains("below 99.99%"), "{again}");
}

/// Without a reachable NOTIFY_SOCKET the daemon runs as usual.
#[tokio::test]
async fn unreachable_notify_socket_is_harmless() {
    let daemon = TestDaemon::builder()
        .env("NOTIFY_SOCKET", "/nonexistent/notify")
        .env("WATCHDOG_USEC", "100000")
        .start()
        .await;
    daemon.echo_ok().await;
}

/// Under socket activation the daemon serves the sockets systemd passes, named "grpc" for
/// mutual TLS and "health" for plaintext health (TCP and a unix socket), instead of binding
/// its own.
#[tokio::test]
async fn socket_activation() {
    require("systemd-socket-activate", "systemd");
    let pki = Arc::new(TestPki::new());
    let dir = write_config(&pki, "[server]\nlisten = [\"127.0.0.1:1\"]\n");
    let (grpc, health) = (free_port(), free_port());
    let unix = dir.path().join("health.sock");
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{grpc}"), "--fdname=grpc"])
        .args(["-l", &format!("127.0.0.1:{health}"), "--fdname=health"])
        .args(["-l", unix.to_str().unwrap(), "--fdname=health"])
        .arg(crate::support::vitalsd())
        .arg("--config")
        .arg(dir.path().join("vitalsd.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("\"serving\""))
    });
    // systemd-socket-activate starts the daemon on the first connection.
    let addr = format!("127.0.0.1:{grpc}");
    let dial = pki.dial(&addr);
    // systemd-socket-activate binds once it has started.
    let channel = crate::support::connect_when_up(&dial).await;
    let reply = vitals::proto::echo::echo_client::EchoClient::new(channel)
        .echo(EchoRequest {
            echo_message: "activated".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().echo_message, "activated");
    let plain = vitals::client::Dial::plaintext(&format!("127.0.0.1:{health}"))
        .connect()
        .await
        .unwrap();
    vitals::proto::health::health_client::HealthClient::new(plain)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    // A passed unix socket serves plaintext health too.
    let stream = tokio::net::UnixStream::connect(&unix).await.unwrap();
    crate::support::raw::assert_health_serving(crate::support::raw::over(stream).await.unwrap())
        .await;
    let serving = lines.join().unwrap().expect("a serving line");
    assert!(serving.contains(&format!("127.0.0.1:{grpc}")), "{serving}");
    assert!(
        !serving.contains("127.0.0.1:1\""),
        "server.listen is not bound: {serving}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The units pass `systemd-analyze verify` with nothing on stderr (it exits 0 on unknown
/// keys), and the service's exposure is at most 2.0.
#[test]
fn units_verify_and_are_hardened() {
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(units.join("vitalsd.service"))
        .unwrap()
        .replace("/usr/local/bin/vitalsd", crate::support::vitalsd());
    std::fs::write(dir.path().join("vitalsd.service"), service).unwrap();
    for socket in ["vitalsd.socket", "vitalsd-health.socket"] {
        std::fs::copy(units.join(socket), dir.path().join(socket)).unwrap();
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            ["vitalsd.service", "vitalsd.socket", "vitalsd-health.socket"]
                .map(|u| dir.path().join(u)),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );

    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.path().join("vitalsd.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vitalsd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in: {text}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
}

/// A real journald (in a private mount namespace, volatile storage) receives the daemon's
/// entries with SYSLOG_IDENTIFIER=vitalsd, syslog priorities by level, and the structured
/// fields of each call.
#[tokio::test]
async fn journald_entries_have_fields_and_priorities() {
    require("journalctl", "systemd");
    assert!(
        Path::new("/lib/systemd/systemd-journald").exists(),
        "systemd-journald is missing"
    );
    let pki = Arc::new(TestPki::new());
    let port = free_port();
    // A failing threshold gives a warning; access lines give the call fields.
    let dropin = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[log]\nformat = \"journald\"\naccess = true\n[health]\nmin_disk_free_percent = 99.9\n[auth]\naudit = [\"vitals.echo.v1.Echo/*\"]\n"
    );
    let dir = write_config(&pki, &dropin);
    let script = NamespacedScript::spawn(
        JOURNALD_SCRIPT,
        dir.path(),
        &dir.path().join("vitalsd.toml"),
        dir.path(),
    );
    let pid: u32 = script
        .line_with("PID ", Duration::from_secs(10))
        .strip_prefix("PID ")
        .expect("the script reports the daemon's pid")
        .parse()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let dial = pki.dial(&addr);
    let channel = crate::support::connect_when_up(&dial).await;
    let mut echo = vitals::proto::echo::echo_client::EchoClient::new(channel.clone());
    echo.echo(EchoRequest::default()).await.unwrap();
    let _ = echo
        .echo(EchoRequest {
            status_code: 14,
            ..Default::default()
        })
        .await;
    // The failing threshold turns overall health NOT_SERVING in the same step that logs the
    // warning: once a check sees it, the warning has been written.
    let health = vitals::proto::health::health_client::HealthClient::new(channel);
    crate::support::eventually(Duration::from_secs(10), || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(HealthCheckRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .status();
            (status == vitals::proto::health::health_check_response::ServingStatus::NotServing)
                .then_some(())
                .ok_or(format!("{status:?}"))
        }
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let (status, lines) = script.finish().await;
    let entries: Vec<serde_json::Value> = lines
        .into_iter()
        .filter_map(|l| serde_json::from_str(&l).ok())
        .filter(|e: &serde_json::Value| e["SYSLOG_IDENTIFIER"] == "vitalsd")
        .collect();
    assert!(
        status.success() && !entries.is_empty(),
        "journald script failed ({status}), entries: {entries:?}"
    );

    let find = |message: &str| {
        entries
            .iter()
            .find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains(message)))
            .unwrap_or_else(|| panic!("no `{message}` entry in {entries:#?}"))
    };
    assert_eq!(find("serving")["PRIORITY"], "6");
    assert_eq!(find("health checks fail")["PRIORITY"], "4");
    let calls: Vec<_> = entries
        .iter()
        .filter(|e| e["GRPC_METHOD"] == "/vitals.echo.v1.Echo/Echo")
        .collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0]["GRPC_CODE"], "OK");
    assert_eq!(calls[1]["GRPC_CODE"], "UNAVAILABLE");
    // Audit lines are filterable by their own fields.
    let audits: Vec<_> = entries
        .iter()
        .filter(|e| e["AUDIT_DECISION"] == "allow")
        .collect();
    assert_eq!(audits.len(), 2, "{audits:#?}");
    assert_eq!(audits[0]["AUDIT_IDENTITY"], crate::support::CLIENT_ID);
    assert_eq!(audits[0]["AUDIT_METHOD"], "/vitals.echo.v1.Echo/Echo");
    for call in calls {
        assert_eq!(call["PEER"], crate::support::CLIENT_ID);
        assert!(
            call["REQUEST_ID"].as_str().is_some_and(|id| id.len() == 32),
            "{call}"
        );
        assert!(
            call["PEER_ADDR"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert!(call["LATENCY_US"].as_str().unwrap().parse::<u64>().is_ok());
        assert_eq!(call["PRIORITY"], "6");
    }
}

/// Starts journald in this private mount namespace, runs vitalsd against it, and prints the
/// journal as JSON when vitalsd has exited. Arguments: vitalsd, its config, a work dir.
const JOURNALD_SCRIPT: &str = r#"
set -eu
vitalsd=$1 config=$2 work=$3
mkdir -p /run/systemd /run/log
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mkdir -p /run/systemd/journal
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nRateLimitIntervalSec=0\nRateLimitBurst=0\nForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\nForwardToKMsg=no\n' > "$work/journald.conf"
mount --bind "$work/journald.conf" /etc/systemd/journald.conf
/lib/systemd/systemd-journald &
journald=$!
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
"$vitalsd" --config "$config" 2>"$work/stderr" &
echo "PID $!"
wait $! || { echo "vitalsd failed: $(cat "$work/stderr")" >&2; exit 1; }
journalctl --sync 2>/dev/null || true
# --sync does not work in every namespace, and a loaded journald can be seconds behind: wait
# for the daemon's last line ("stopped") to be in the journal rather than for a fixed time.
for _ in $(seq 100); do
  journalctl -D /run/log/journal -o cat --no-pager 2>/dev/null | grep -qx stopped && break
  sleep 0.1
done
journalctl -D /run/log/journal -o json --no-pager
kill $journald
"#;
