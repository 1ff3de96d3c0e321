//! Hostile input and faults (issue 8): broken and abusive peers, and faults, against the real
//! daemon. Every attack is followed by the same checks: a well-behaved client is served
//! promptly, the daemon's open descriptors return to the baseline, and its RSS returns to
//! within [`RSS_MARGIN_KIB`] of the baseline. HTTP/2 and transport abuse is driven by
//! `tests/hostile/h2_abuse.py` (python3, standard library only), gRPC-level abuse by the raw
//! h2 client in `support/raw.rs`. Each test prints one `hostile:` line with what it saw;
//! RELIABILITY.md collects them.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use vitals::{
    pki::{Leaf, Usage},
    proto::{
        echo::{EchoRequest, echo_client::EchoClient},
        metrics::{SnapshotRequest, metrics_client::MetricsClient},
    },
    tls::ClientAuth,
};

use crate::support::{NamespacedScript, TestDaemon, TestDaemonBuilder, TestPki, eventually, raw};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/h2_abuse.py");
const ECHO: &str = "/vitals.echo.v1.Echo/Echo";

/// How far above the baseline the daemon's RSS may stay once an attack is over. glibc malloc
/// keeps freed memory in its arenas (one per worker thread) rather than returning it, so RSS
/// after a burst settles above the warm baseline even though nothing leaks; across these
/// tests it settled at most ~1.4 MiB above (see RELIABILITY.md). A leak of ~200 bytes per
/// stream would cross it over rapid_reset's 10 000 streams; a leaked connection shows at
/// once in the descriptor count, which must return exactly.
const RSS_MARGIN_KIB: u64 = 2048;

/// A well-behaved client (a new connection, its TLS handshake and one echo call) must be
/// served within this. Alone it takes 5-30 ms; with `--test-threads 8` on 2 cores (debug
/// builds, the python attacker and other tests' daemons competing) up to ~600 ms was seen,
/// so 500 ms would fail on the test machine's load, not on the daemon.
const PROMPT: Duration = Duration::from_millis(1000);

/// The daemon's resident memory and open descriptors.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    /// The peak RSS so far (VmHWM).
    hwm_kib: u64,
    fds: usize,
}

impl Footprint {
    fn of(daemon: &TestDaemon) -> Footprint {
        let pid = daemon.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        };
        Footprint {
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count(),
        }
    }
}

/// Warms the daemon up (connections, calls of a few sizes, so allocator pools and lazy
/// statics exist), waits for its descriptors to settle, and returns its footprint.
async fn baseline(daemon: &TestDaemon) -> Footprint {
    for _ in 0..3 {
        let mut echo = daemon.echo().await;
        for size in [0, 1024, 64 * 1024] {
            for _ in 0..5 {
                echo.echo(EchoRequest {
                    echo_message: "warm".into(),
                    response_size: size,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }
    }
    settled(daemon).await
}

/// The footprint once the descriptor count has held still for 300 ms (closed clients gone).
async fn settled(daemon: &TestDaemon) -> Footprint {
    let mut last = Footprint::of(daemon);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = Footprint::of(daemon);
        if now.fds == last.fds || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Connects a new client and makes one echo call; how long both took.
async fn serve_once(daemon: &TestDaemon) -> Result<Duration, String> {
    let started = Instant::now();
    let channel = daemon
        .dial()
        .connect()
        .await
        .map_err(|e| format!("{e:#}"))?;
    EchoClient::new(channel)
        .echo(EchoRequest {
            echo_message: "well-behaved".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(started.elapsed())
}

/// The checks after every attack: a new client served within [`PROMPT`], descriptors back
/// to the baseline, RSS back within [`RSS_MARGIN_KIB`]. Prints one line and returns the
/// footprint after.
async fn assert_recovered(daemon: &TestDaemon, name: &str, base: Footprint) -> Footprint {
    let served = serve_once(daemon)
        .await
        .unwrap_or_else(|e| panic!("{name}: a well-behaved client was not served: {e}"));
    assert!(
        served < PROMPT,
        "{name}: a well-behaved client waited {served:?}"
    );
    eventually(Duration::from_secs(10), || async {
        let now = Footprint::of(daemon);
        if now.fds != base.fds {
            return Err(format!(
                "{} fds open, {} at the baseline",
                now.fds, base.fds
            ));
        }
        if now.rss_kib > base.rss_kib + RSS_MARGIN_KIB {
            return Err(format!(
                "RSS {} KiB, baseline {} KiB + {RSS_MARGIN_KIB} KiB",
                now.rss_kib, base.rss_kib
            ));
        }
        Ok(())
    })
    .await;
    let after = Footprint::of(daemon);
    eprintln!(
        "hostile: {name}: served in {} ms; rss {} -> {} KiB (peak {} KiB, +{} KiB after); fds {} -> {}",
        served.as_millis(),
        base.rss_kib,
        after.rss_kib,
        after.hwm_kib,
        after.rss_kib.saturating_sub(base.rss_kib),
        base.fds,
        after.fds
    );
    after
}

/// A well-behaved client calling every 50 ms on its own connection while an attack runs.
struct Prober {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Duration, Vec<String>)>,
}

impl Prober {
    async fn start(daemon: &TestDaemon) -> Prober {
        let mut echo = daemon.echo().await;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut calls, mut slowest, mut errors) = (0, Duration::ZERO, Vec::new());
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let call = echo.echo(EchoRequest::default());
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => errors.push(format!("{status:?}")),
                    Err(_) => errors.push("no answer within 5 s".into()),
                }
                calls += 1;
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (calls, slowest, errors)
        });
        Prober { stop, task }
    }

    /// Stops probing; panics if any call failed. Returns the calls made and the slowest.
    async fn finish(self, name: &str) -> (usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let (calls, slowest, errors) = self.task.await.unwrap();
        assert!(
            errors.is_empty(),
            "{name}: an established client failed during the attack: {errors:?}"
        );
        eprintln!(
            "hostile: {name}: established client during the attack: {calls} calls, slowest {} ms",
            slowest.as_millis()
        );
        (calls, slowest)
    }
}

/// Runs one attack of the python script against the daemon; its JSON report.
async fn attack(daemon: &TestDaemon, name: &str, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new("python3");
    command
        .arg(SCRIPT)
        .arg("--addr")
        .arg(daemon.addr.to_string())
        .arg("--ca")
        .arg(daemon.pki.path("ca.crt"))
        .arg("--cert")
        .arg(daemon.pki.path("client.crt"))
        .arg("--key")
        .arg(daemon.pki.path("client.key"))
        .arg("--attack")
        .arg(name)
        .args(args)
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("python3 runs the hostile client ({e}); install it: apt-get install python3")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name}: h2_abuse.py failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{name}: not a JSON report ({e}): {stdout}"));
    eprintln!("hostile: {name}: {line}");
    report
}

/// Runs an attack while a prober calls, then checks recovery; the attack's report.
async fn attack_and_recover(
    daemon: &TestDaemon,
    name: &str,
    args: &[&str],
) -> (serde_json::Value, Footprint, Footprint) {
    let base = baseline(daemon).await;
    let prober = Prober::start(daemon).await;
    let report = attack(daemon, name, args).await;
    prober.finish(name).await;
    let after = assert_recovered(daemon, name, base).await;
    (report, base, after)
}

fn goaway(report: &serde_json::Value) -> (&str, &str) {
    (
        report["goaway"]["code"].as_str().unwrap_or("-"),
        report["goaway"]["debug"].as_str().unwrap_or("-"),
    )
}

// --- HTTP/2 abuse over mutual TLS ---------------------------------------------------------

/// Rapid reset (CVE-2023-44487): HEADERS and RST_STREAM at once, 10 000 times over up to 20
/// connections. h2 allows 20 streams reset before the server accepts them, then sends
/// GOAWAY ENHANCE_YOUR_CALM "too_many_resets" on each connection. Paced (each 10 HEADERS
/// accepted before their RSTs arrive, 5 000 streams) a connection ends the same way, but
/// only after tens to thousands of streams; the daemon serves throughout.
#[tokio::test]
async fn rapid_reset() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(
        &daemon,
        "rapid_reset",
        &["--count", "10000", "--connections", "20", "--seconds", "15"],
    )
    .await;
    assert_eq!(report["outcome"], "goaway ENHANCE_YOUR_CALM", "{report}");
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(goaway(phase), ("ENHANCE_YOUR_CALM", "too_many_resets"));
        // At most 20 resets (plus the streams in the read that crossed the line) were let in.
        assert!(
            phase["goaway"]["last_stream_id"].as_u64().unwrap() <= 2 * 25 + 1,
            "{phase}"
        );
    }
    let (report, _, _) = attack_and_recover(
        &daemon,
        "rapid_reset",
        &[
            "--count",
            "5000",
            "--batch",
            "10",
            "--pace-ms",
            "1",
            "--connections",
            "20",
            "--seconds",
            "15",
        ],
    )
    .await;
    // The last connection may run out of streams to send before its GOAWAY; a connection
    // may carry thousands before one (RELIABILITY.md, finding 5).
    let phases = report["phases"].as_array().unwrap();
    for phase in &phases[..phases.len() - 1] {
        assert_eq!(goaway(phase).0, "ENHANCE_YOUR_CALM", "{report}");
    }
}

/// A PING flood (CVE-2019-9512): 20 000 PINGs, the replies not read until the end. The
/// server answers every one and keeps at most one reply pending (h2 stops reading while it
/// cannot write), so memory stays flat.
#[tokio::test]
async fn ping_flood() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "ping_flood", &["--count", "20000"]).await;
    assert_eq!(report["sent"]["ping"], 20000, "{report}");
    assert!(report["goaway"].is_null(), "{report}");
    assert_eq!(report["pongs"], 20000, "{report}");
}

/// A SETTINGS flood (CVE-2019-9515): 5 000 SETTINGS frames of 100 entries each, changing
/// the initial window of 16 open streams, ACKs not read until the end. Each is ACKed.
#[tokio::test]
async fn settings_flood() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "settings_flood", &["--count", "5000"]).await;
    assert_eq!(report["sent"]["settings"], 5000, "{report}");
    assert!(report["goaway"].is_null(), "{report}");
}

/// A CONTINUATION flood (CVE-2024-27316 and kin): a header block that never ends. h2 allows
/// 5 CONTINUATION frames for a 16 KiB header list, then sends GOAWAY ENHANCE_YOUR_CALM.
#[tokio::test]
async fn continuation_flood() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) =
        attack_and_recover(&daemon, "continuation_flood", &["--count", "10000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "too_many_continuations"),
        "{report}"
    );
}

/// A 1 MiB header list (the limit is 16 KiB) in 16 KiB frames: h2 stops buffering once the
/// block passes the limit and sends GOAWAY COMPRESSION_ERROR; a 20 KiB list (just over) is
/// answered with HTTP 431 and the connection stays up.
#[tokio::test]
async fn huge_headers() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "huge_headers", &["--count", "1024"]).await;
    assert_eq!(goaway(&report).0, "COMPRESSION_ERROR", "{report}");
    let report = attack(&daemon, "huge_headers", &["--count", "20"]).await;
    assert!(report["goaway"].is_null(), "{report}");
    assert_eq!(report["statuses"]["431"], 1, "{report}");
}

/// An HPACK bomb (CVE-2016-6581): 8 KiB on the wire that decode to 16 MiB of headers by
/// repeating a dynamic-table index. h2 sends GOAWAY ENHANCE_YOUR_CALM.
#[tokio::test]
async fn hpack_bomb() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) = attack_and_recover(&daemon, "hpack_bomb", &["--count", "4000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "header_list_way_too_large"),
        "{report}"
    );
}

/// 2 000 streams opened and never finished, above max_concurrent_streams (128): 128 are
/// served (their handlers wait for a body), the others get REFUSED_STREAM, and after 1 024
/// refusals h2 sends GOAWAY ENHANCE_YOUR_CALM. 128 streams held for 2 s do not starve a
/// well-behaved client on another connection.
#[tokio::test]
async fn too_many_streams() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) =
        attack_and_recover(&daemon, "too_many_streams", &["--count", "2000"]).await;
    assert_eq!(
        goaway(&report),
        ("ENHANCE_YOUR_CALM", "too_many_internal_resets"),
        "{report}"
    );
    assert_eq!(report["rst_codes"]["REFUSED_STREAM"], 1024, "{report}");
    assert_eq!(
        report["goaway"]["last_stream_id"], 255,
        "128 streams let in"
    );

    let (report, _, _) = attack_and_recover(
        &daemon,
        "too_many_streams",
        &["--count", "128", "--hold", "2"],
    )
    .await;
    assert_eq!(report["outcome"], "open", "{report}");
}

/// 128 streams each announcing a 4 MiB message (the limit) but sending 1 KiB of it, held
/// for 2 s: the handlers wait for bodies that never come; the reservations are not touched,
/// so RSS grows by a few MiB, not 512 MiB, and all of it returns.
#[tokio::test]
async fn announced_bodies() {
    let daemon = TestDaemon::start("").await;
    let (report, _, after) = attack_and_recover(
        &daemon,
        "announced_bodies",
        &["--count", "128", "--hold", "2"],
    )
    .await;
    assert_eq!(report["outcome"], "open", "{report}");
    assert!(
        after.hwm_kib < after.rss_kib + 64 * 1024,
        "peak {} KiB",
        after.hwm_kib
    );
}

/// WINDOW_UPDATE abuse: 100 streams whose send window overflows past 2^31-1 get RST_STREAM
/// FLOW_CONTROL_ERROR; a zero increment on a stream gets GOAWAY PROTOCOL_ERROR (h2 treats
/// it as a connection error); the connection window overflowing gets GOAWAY
/// FLOW_CONTROL_ERROR; a zero increment on the connection gets GOAWAY PROTOCOL_ERROR.
#[tokio::test]
async fn window_update_abuse() {
    let daemon = TestDaemon::start("").await;
    let (report, _, _) =
        attack_and_recover(&daemon, "window_update_abuse", &["--count", "100"]).await;
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(
        phases[0]["rst_codes"]["FLOW_CONTROL_ERROR"], 100,
        "{report}"
    );
    assert_eq!(goaway(&phases[1]).0, "PROTOCOL_ERROR", "{report}");
    assert_eq!(goaway(&phases[2]).0, "FLOW_CONTROL_ERROR", "{report}");
    assert_eq!(goaway(&phases[3]).0, "PROTOCOL_ERROR", "{report}");
}

// --- not TLS at all -----------------------------------------------------------------------

/// Asserts every connection of a plaintext attack was closed at once, with a TLS alert.
fn assert_closed_fast(report: &serde_json::Value) {
    assert_eq!(report["outcome"], "closed", "{report}");
    assert!(
        report["max_close_ms"].as_f64().unwrap() < 500.0,
        "closed late: {report}"
    );
}

/// The HTTP/2 preface and a request in plaintext on the TLS port, 20 connections: each
/// gets a TLS alert and is closed at once.
#[tokio::test]
async fn plaintext_h2() {
    let daemon = TestDaemon::start("[server]\nhandshake_timeout = \"5s\"\n").await;
    let (report, _, _) = attack_and_recover(&daemon, "plaintext_h2", &["--count", "20"]).await;
    assert_closed_fast(&report);
    assert!(
        report["first_bytes_hex"]
            .as_str()
            .unwrap()
            .starts_with("15"),
        "a TLS alert record first: {report}"
    );
}

/// An HTTP/1.1 request in plaintext on the TLS port, 20 connections: a TLS alert and an
/// immediate close.
#[tokio::test]
async fn plaintext_h1() {
    let daemon = TestDaemon::start("[server]\nhandshake_timeout = \"5s\"\n").await;
    let (report, _, _) = attack_and_recover(&daemon, "plaintext_h1", &["--count", "20"]).await;
    assert_closed_fast(&report);
}

/// 200 connections of random bytes (half inside a TLS handshake record header): every one
/// is closed at once, none waits for the handshake timeout.
#[tokio::test]
async fn random_bytes() {
    let daemon = TestDaemon::start("[server]\nhandshake_timeout = \"5s\"\n").await;
    let (report, _, _) = attack_and_recover(
        &daemon,
        "random_bytes",
        &["--count", "200", "--seconds", "10"],
    )
    .await;
    assert_closed_fast(&report);
}

// --- TLS refusals -------------------------------------------------------------------------

/// Makes one call with `config`; Ok if it went through.
async fn try_call(daemon: &TestDaemon, config: rustls::ClientConfig) -> Result<(), String> {
    let dial = vitals::client::Dial::with_tls(&daemon.addr.to_string(), config);
    let channel = dial.connect().await.map_err(|e| format!("{e:#}"))?;
    EchoClient::new(channel)
        .echo(EchoRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// A PKI with the refused kinds of client certificate besides the good one.
fn refusal_pki() -> Arc<TestPki> {
    let pki = Arc::new(TestPki::new());
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let mut expired = Leaf::new("old", &["spiffe://test.vitals/old"], Usage::Client, 1);
    expired.not_before = now - 7 * day;
    expired.not_after = now - day;
    pki.issue("expired", &expired);
    let mut future = Leaf::new("future", &["spiffe://test.vitals/future"], Usage::Client, 1);
    future.not_before = now + day;
    future.not_after = now + 30 * day;
    pki.issue("notyet", &future);
    pki.issue(
        "serveronly",
        &Leaf::new("s", &["serveronly.test"], Usage::Server, 1),
    );
    pki
}

/// A certificate that is not valid yet (not_before tomorrow) is refused, and the refusal
/// is logged.
#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let daemon = TestDaemon::builder().pki(refusal_pki()).start().await;
    let config = daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("notyet.crt"),
        key: &daemon.pki.path("notyet.key"),
    });
    let result = try_call(&daemon, config).await;
    assert!(result.is_err(), "a not-yet-valid certificate got through");
    eventually(Duration::from_secs(3), || async {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("TLS handshake refused") && l.contains("not valid yet"))
            .then_some(())
            .ok_or_else(|| format!("no `not valid yet` refusal logged: {:?}", daemon.logs()))
    })
    .await;
}

/// Every kind of refused client certificate, 10 times each (no certificate, another CA,
/// expired, not yet valid, no clientAuth usage): all refused, and the daemon as before. The
/// refusals are logged at most once a second (the client sets their pace), with the count
/// of the ones held back.
#[tokio::test]
async fn tls_refusals() {
    let daemon = TestDaemon::builder().pki(refusal_pki()).start().await;
    let other = TestPki::new();
    let base = baseline(&daemon).await;
    let ca = daemon.pki.path("ca.crt");
    let cert = |dir: &TestPki, name: &str| {
        vitals::tls::client_config(
            &ca,
            ClientAuth::Certificate {
                cert: &dir.path(&format!("{name}.crt")),
                key: &dir.path(&format!("{name}.key")),
            },
        )
        .unwrap()
    };
    let kinds = [
        ("anonymous", daemon.client_tls(ClientAuth::Anonymous)),
        ("other CA", cert(&other, "client")),
        ("expired", cert(&daemon.pki, "expired")),
        ("not yet valid", cert(&daemon.pki, "notyet")),
        ("no clientAuth", cert(&daemon.pki, "serveronly")),
    ];
    let mut tries = 0;
    let started = Instant::now();
    for (why, config) in &kinds {
        for _ in 0..10 {
            let result = try_call(&daemon, config.clone()).await;
            assert!(result.is_err(), "{why}: the call went through");
            tries += 1;
        }
    }
    let seconds = started.elapsed().as_secs() as usize;
    eventually(Duration::from_secs(5), || async {
        let lines: Vec<serde_json::Value> = daemon
            .log_json()
            .into_iter()
            .filter(|l| l["fields"]["message"] == "TLS handshake refused")
            .collect();
        let suppressed: u64 = lines
            .iter()
            .filter_map(|l| l["fields"]["suppressed"].as_u64())
            .sum();
        (!lines.is_empty() && lines.len() <= seconds + 2)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "{} refusal lines ({suppressed} held back) for {tries} refusals in {seconds}s",
                    lines.len()
                )
            })
    })
    .await;
    assert_recovered(&daemon, "tls_refusals", base).await;
}

// --- connections --------------------------------------------------------------------------

/// How long after `opened` the server closed the connection (`None`: not within `limit`).
async fn closed_after<R>(mut tcp: R, opened: Instant, limit: Duration) -> Option<Duration>
where
    R: AsyncRead + Unpin,
{
    let mut buf = [0u8; 256];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return opened.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()
}

/// Slow handshakes beyond the cap (max_connections 16, handshake_timeout 1 s): 24 TCP
/// connections that never finish TLS (4 of them trickling a ClientHello a byte every
/// 100 ms) while an established client calls every 50 ms. Those above the cap are closed
/// at once, the others at the handshake timeout, trickling or not; the established client
/// is never refused or slowed, and a new client is served once the slots free up.
#[tokio::test]
async fn slow_handshakes_beyond_cap() {
    let daemon =
        TestDaemon::start("[server]\nmax_connections = 16\nhandshake_timeout = \"1s\"\n").await;
    let base = baseline(&daemon).await;
    let prober = Prober::start(&daemon).await; // one slot
    let mut held = Vec::new();
    for i in 0..24 {
        let mut tcp = TcpStream::connect(daemon.addr).await.unwrap();
        let opened = Instant::now();
        if i < 4 {
            // A ClientHello record header promising 512 bytes, then a byte at a time.
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .await
                .unwrap();
            let (mut rd, mut wr) = tcp.into_split();
            let trickle = tokio::spawn(async move {
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if wr.write_all(&[0x01]).await.is_err() {
                        break;
                    }
                }
            });
            held.push(tokio::spawn(async move {
                let closed = closed_after(&mut rd, opened, Duration::from_secs(5)).await;
                trickle.abort();
                closed
            }));
        } else {
            held.push(tokio::spawn(closed_after(
                tcp,
                opened,
                Duration::from_secs(5),
            )));
        }
    }
    // Not asserted, reported: while unauthenticated handshakes fill the cap, a new client
    // is turned away like any other connection above it.
    let newcomer = serve_once(&daemon).await;
    let mut fast = 0;
    let mut at_timeout = Vec::new();
    for (i, h) in held.into_iter().enumerate() {
        let closed = h.await.unwrap().expect("every held connection is closed");
        if closed < Duration::from_millis(300) {
            assert!(
                i >= 4,
                "trickling connection {i} was closed early: {closed:?}"
            );
            fast += 1;
        } else {
            at_timeout.push(closed);
        }
    }
    let (calls, _) = prober.finish("slow_handshakes_beyond_cap").await;
    assert!(calls >= 10, "the established client kept calling: {calls}");
    assert!(
        fast >= 24 - 15,
        "{fast} closed at once; at least 9 are above the cap"
    );
    for closed in &at_timeout {
        assert!(
            *closed >= Duration::from_millis(900) && *closed < Duration::from_millis(1800),
            "a held connection closed after {closed:?}, the timeout is 1 s: {at_timeout:?}"
        );
    }
    eprintln!(
        "hostile: slow_handshakes_beyond_cap: {fast} refused at once, {} closed at the timeout ({:?}..{:?}); a new client while the cap was full: {newcomer:?}",
        at_timeout.len(),
        at_timeout.iter().min(),
        at_timeout.iter().max()
    );
    assert_recovered(&daemon, "slow_handshakes_beyond_cap", base).await;
}

/// A connection flood above the cap: with 16 slots taken (an established client and 15
/// silent connections), 500 more connections are each closed at once, the established
/// client is served throughout, and no descriptor is left behind.
#[tokio::test]
async fn connection_flood_above_cap() {
    let daemon =
        TestDaemon::start("[server]\nmax_connections = 16\nhandshake_timeout = \"20s\"\n").await;
    let base = baseline(&daemon).await;
    let prober = Prober::start(&daemon).await;
    let mut silent = Vec::new();
    for _ in 0..15 {
        silent.push(TcpStream::connect(daemon.addr).await.unwrap());
    }
    // Wait until the daemon holds them: its descriptors grow by 16.
    eventually(Duration::from_secs(5), || async {
        let fds = Footprint::of(&daemon).fds;
        (fds >= base.fds + 16)
            .then_some(())
            .ok_or_else(|| format!("{fds} fds"))
    })
    .await;
    let started = Instant::now();
    let mut times = Vec::new();
    for _ in 0..10 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let tcp = TcpStream::connect(daemon.addr).await.unwrap();
            batch.push(tokio::spawn(closed_after(
                tcp,
                Instant::now(),
                Duration::from_secs(5),
            )));
        }
        for b in batch {
            times.push(b.await.unwrap().expect("refused within 5 s"));
        }
    }
    let flood = started.elapsed();
    prober.finish("connection_flood_above_cap").await;
    times.sort();
    let p50 = times[times.len() / 2];
    let max = *times.last().unwrap();
    eprintln!(
        "hostile: connection_flood_above_cap: 500 connections refused in {} ms; close after p50 {:?}, max {:?}",
        flood.as_millis(),
        p50,
        max
    );
    assert!(max < Duration::from_millis(500), "refused after {max:?}");
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("connection cap reached"))
    );
    drop(silent);
    // The slots free up as the daemon sees the silent connections' FIN; until then a new
    // client would (rightly) be refused.
    eventually(Duration::from_secs(5), || async {
        let fds = Footprint::of(&daemon).fds;
        (fds == base.fds)
            .then_some(())
            .ok_or_else(|| format!("{fds} fds, baseline {}", base.fds))
    })
    .await;
    assert_recovered(&daemon, "connection_flood_above_cap", base).await;
}

// --- gRPC-level abuse ---------------------------------------------------------------------

fn client_tls(daemon: &TestDaemon) -> rustls::ClientConfig {
    daemon.client_tls(ClientAuth::Certificate {
        cert: &daemon.pki.path("client.crt"),
        key: &daemon.pki.path("client.key"),
    })
}

/// The gRPC status and message of a raw call.
async fn raw_status(
    conn: &mut raw::RawConn,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (String, String) {
    let reply = raw::call_with(&mut conn.send, ECHO, headers, body)
        .await
        .expect("the call gets an answer, not a reset");
    let message = reply
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-message"))
        .or_else(|| reply.headers.get("grpc-message"))
        .map(|v| percent_decode(v.to_str().unwrap()))
        .unwrap_or_default();
    (reply.grpc_status.unwrap_or_default(), message)
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gzip of `n` zero bytes, made by python3 (the tests have no gzip of their own).
fn gzip_zeros(n: usize) -> Vec<u8> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.compress(bytes(int(sys.argv[1])), 9))",
            &n.to_string(),
        ])
        .output()
        .expect("python3 runs (apt-get install python3)");
    assert!(output.status.success());
    output.stdout
}

/// A message whose length prefix says 100 bytes but whose body has 10 before END_STREAM
/// gets a clean status: INTERNAL "Unexpected EOF decoding stream." (tonic's answer).
#[tokio::test]
async fn truncated_message() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = raw::connect(daemon.addr, client_tls(&daemon)).await;
    let (code, message) = raw_status(&mut conn, &[], raw::frame_raw(false, 100, &[0x0a; 10])).await;
    eprintln!("hostile: truncated_message: grpc-status {code} {message:?}");
    assert_eq!(code, "13", "{message}");
    assert!(message.contains("Unexpected EOF"), "{message}");
    // A prefix cut short (3 of its 5 bytes) is the same.
    let (code, _) = raw_status(&mut conn, &[], Bytes::from_static(&[0, 0, 0])).await;
    assert_eq!(code, "13");
    drop(conn);
    assert_recovered(&daemon, "truncated_message", base).await;
}

/// Malformed protobuf (a bad wire type, a length past the end, invalid UTF-8 in a string,
/// a varint of 11 bytes) gets INTERNAL with prost's reason; the connection serves on.
#[tokio::test]
async fn malformed_protobuf() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = raw::connect(daemon.addr, client_tls(&daemon)).await;
    let cases: [(&str, &[u8]); 4] = [
        ("wire type 7", &[0x0f, 0x00]),
        ("length past the end", &[0x0a, 0xff, 0xff, 0x03, b'a']),
        ("invalid UTF-8", &[0x0a, 0x02, 0xff, 0xfe]),
        (
            "11-byte varint",
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
    ];
    for (what, body) in cases {
        let frame = raw::frame_raw(false, body.len() as u32, body);
        let (code, message) = raw_status(&mut conn, &[], frame).await;
        eprintln!("hostile: malformed_protobuf: {what}: grpc-status {code} {message:?}");
        assert_eq!(code, "13", "{what}: {message}");
    }
    let ok = raw::call(&mut conn.send, ECHO, raw::frame(&EchoRequest::default()))
        .await
        .unwrap();
    assert_eq!(ok.grpc_status.as_deref(), Some("0"));
    drop(conn);
    assert_recovered(&daemon, "malformed_protobuf", base).await;
}

/// A 5 MiB message (the limit is 4 MiB) is RESOURCE_EXHAUSTED, sent in full or only
/// announced by its length prefix.
#[tokio::test]
async fn oversized_message() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = raw::connect(daemon.addr, client_tls(&daemon)).await;
    let big = 5 << 20;
    let (code, message) = raw_status(&mut conn, &[], raw::frame_raw(false, big, &[0; 16])).await;
    eprintln!("hostile: oversized_message: announced: grpc-status {code} {message:?}");
    assert_eq!(code, "8", "{message}");
    let full = raw::frame_raw(false, big, &vec![0; big as usize]);
    let (code, message) = raw_status(&mut conn, &[], full).await;
    assert_eq!(code, "8", "{message}");
    drop(conn);
    assert_recovered(&daemon, "oversized_message", base).await;
}

/// 10 gzip and 10 zstd bombs on one connection; each must be RESOURCE_EXHAUSTED. The
/// footprint once settled.
async fn bomb_round(daemon: &TestDaemon, bombs: &[(&str, Bytes)]) -> Footprint {
    let mut conn = raw::connect(daemon.addr, client_tls(daemon)).await;
    for (encoding, frame) in bombs {
        for _ in 0..10 {
            let (code, message) =
                raw_status(&mut conn, &[("grpc-encoding", encoding)], frame.clone()).await;
            assert_eq!(code, "8", "{encoding}: {message}");
        }
    }
    drop(conn);
    settled(daemon).await
}

/// Starts `daemon`, takes the baseline, and runs six rounds of 20 compression bombs
/// (64 KiB of gzip and 2 KiB of zstd, each inflating to 64 MiB; the limit is 4 MiB).
/// Returns the baseline and the footprint after each round.
async fn bomb_rounds(name: &str, daemon: TestDaemonBuilder) -> (Footprint, Vec<Footprint>) {
    let daemon = daemon.start().await;
    let base = baseline(&daemon).await;
    let size = 64 << 20;
    let gzip = gzip_zeros(size);
    let zstd = raw::zstd_bomb(size);
    let bombs = [
        ("gzip", raw::frame_raw(true, gzip.len() as u32, &gzip)),
        ("zstd", raw::frame_raw(true, zstd.len() as u32, &zstd)),
    ];
    let mut rounds = Vec::new();
    for _ in 0..6 {
        rounds.push(bomb_round(&daemon, &bombs).await);
    }
    let peak = rounds.last().unwrap().hwm_kib;
    eprintln!(
        "hostile: {name}: gzip {} B, zstd {} B, each inflating to {size} B: 120 x RESOURCE_EXHAUSTED; rss baseline {} KiB, after each round of 20 {:?} KiB, peak {peak} KiB",
        gzip.len(),
        zstd.len(),
        base.rss_kib,
        rounds.iter().map(|r| r.rss_kib).collect::<Vec<_>>(),
    );
    assert!(
        peak < base.rss_kib + 32 * 1024,
        "a bomb inflated far past the limit: peak {peak} KiB"
    );
    let served = serve_once(&daemon).await.unwrap();
    assert!(served < PROMPT, "{served:?}");
    eventually(Duration::from_secs(10), || async {
        let fds = Footprint::of(&daemon).fds;
        (fds == base.fds)
            .then_some(())
            .ok_or_else(|| format!("{fds} fds, baseline {}", base.fds))
    })
    .await;
    (base, rounds)
}

/// Compression bombs are RESOURCE_EXHAUSTED and inflated only up to the limit (peak RSS far
/// below 64 MiB). Memory plateaus: the last three of six rounds leave RSS where the third
/// did (no leak). It plateaus above the baseline, though: tonic inflates into a buffer of
/// up to max_message_size (4 MiB) and frees it after the call, but glibc raises its mmap
/// threshold once a 4 MiB mmapped block is freed, so later 4 MiB buffers come from, and
/// stay in, malloc's per-thread arenas: about 5 MiB per runtime worker thread (+10 MiB on
/// this 2-core machine), the same for any legitimate 4 MiB message.
#[tokio::test]
async fn compression_bombs() {
    let (base, rounds) = bomb_rounds("compression_bombs", TestDaemon::builder()).await;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let margin = workers * 6 * 1024 + RSS_MARGIN_KIB;
    let last = rounds.last().unwrap().rss_kib;
    assert!(
        last <= rounds[2].rss_kib + 1024,
        "RSS grew from round to round: {rounds:?}"
    );
    assert!(
        last <= base.rss_kib + margin,
        "RSS {last} KiB, baseline {} + {margin} KiB",
        base.rss_kib
    );
}

/// With glibc's mmap threshold fixed at 256 KiB (`GLIBC_TUNABLES`, no code change), the
/// 4 MiB inflation buffers are mmapped and unmapped every time and RSS returns to within
/// [`RSS_MARGIN_KIB`] of the baseline after compression bombs.
#[tokio::test]
async fn compression_bombs_fixed_mmap_threshold() {
    let daemon = TestDaemon::builder().env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=262144");
    let (base, rounds) = bomb_rounds("compression_bombs_fixed_mmap_threshold", daemon).await;
    for round in &rounds {
        assert!(
            round.rss_kib <= base.rss_kib + RSS_MARGIN_KIB,
            "RSS {} KiB, baseline {} KiB: {rounds:?}",
            round.rss_kib,
            base.rss_kib
        );
    }
}

/// A compressed flag without grpc-encoding is INTERNAL; an encoding the server does not
/// know is UNIMPLEMENTED; the connection serves on.
#[tokio::test]
async fn compression_lies() {
    let daemon = TestDaemon::start("").await;
    let base = baseline(&daemon).await;
    let mut conn = raw::connect(daemon.addr, client_tls(&daemon)).await;
    let (code, message) = raw_status(&mut conn, &[], raw::frame_raw(true, 4, b"junk")).await;
    eprintln!("hostile: compression_lies: flag without encoding: grpc-status {code} {message:?}");
    assert_eq!(code, "13", "{message}");
    let (code, message) = raw_status(
        &mut conn,
        &[("grpc-encoding", "br")],
        raw::frame_raw(true, 4, b"junk"),
    )
    .await;
    eprintln!("hostile: compression_lies: unknown encoding: grpc-status {code} {message:?}");
    assert_eq!(code, "12", "{message}");
    let (code, message) = raw_status(
        &mut conn,
        &[("grpc-encoding", "gzip")],
        raw::frame_raw(true, 8, b"not gzip"),
    )
    .await;
    eprintln!("hostile: compression_lies: corrupt gzip: grpc-status {code} {message:?}");
    assert_eq!(code, "13", "{message}");
    let ok = raw::call(&mut conn.send, ECHO, raw::frame(&EchoRequest::default()))
        .await
        .unwrap();
    assert_eq!(ok.grpc_status.as_deref(), Some("0"));
    drop(conn);
    assert_recovered(&daemon, "compression_lies", base).await;
}

/// `grpc-timeout: 0m` (a deadline already passed) is DEADLINE_EXCEEDED, 50 times of 50,
/// for a call that would finish at once as for one with a 100 ms delay.
///
/// FAILS today for the first: the call layer runs the handler under
/// `tokio::time::timeout(0, ..)`, which polls the handler once before looking at the
/// clock, so a handler ready on its first poll answers OK past its deadline.
#[tokio::test]
async fn zero_deadline() {
    let daemon = TestDaemon::start("").await;
    let mut conn = raw::connect(daemon.addr, client_tls(&daemon)).await;
    let mut failures = Vec::new();
    for delay_ms in [0, 100] {
        let mut codes = std::collections::BTreeMap::new();
        let request = raw::frame(&EchoRequest {
            delay_ms,
            ..Default::default()
        });
        for _ in 0..50 {
            let (code, _) = raw_status(&mut conn, &[("grpc-timeout", "0m")], request.clone()).await;
            *codes.entry(code).or_insert(0) += 1;
        }
        eprintln!("hostile: zero_deadline: delay {delay_ms} ms: grpc-status counts {codes:?}");
        if codes.get("4") != Some(&50) {
            failures.push(format!("delay {delay_ms} ms: {codes:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "grpc-timeout 0m must be DEADLINE_EXCEEDED (status 4) every time: {failures:?}"
    );
}

/// An echo delay beyond `server.max_deadline` (1 s here) ends at the cap with
/// DEADLINE_EXCEEDED, whether the client asked for no deadline or a longer one.
#[tokio::test]
async fn delay_beyond_deadline_cap() {
    let daemon = TestDaemon::start("[server]\nmax_deadline = \"1s\"\n").await;
    let mut conn = raw::connect(daemon.addr, client_tls(&daemon)).await;
    let slow = raw::frame(&EchoRequest {
        delay_ms: 3000,
        ..Default::default()
    });
    for headers in [&[][..], &[("grpc-timeout", "10S")][..]] {
        let started = Instant::now();
        let (code, message) = raw_status(&mut conn, headers, slow.clone()).await;
        let took = started.elapsed();
        eprintln!(
            "hostile: delay_beyond_deadline_cap: {headers:?}: grpc-status {code} after {} ms",
            took.as_millis()
        );
        assert_eq!(code, "4", "{message}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }
}

// --- faults -------------------------------------------------------------------------------

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
            let mut echo = echo.clone();
            let sent = format!("{c}-{i}");
            let request = EchoRequest {
                echo_message: sent.clone(),
                delay_ms: 3000,
                ..Default::default()
            };
            let call = tokio::spawn(async move {
                echo.echo(request)
                    .await
                    .map(|r| r.into_inner().echo_message)
            });
            calls.push((sent, call));
        }
    }
    eventually(Duration::from_secs(5), || {
        let mut metrics = metrics.clone();
        async move {
            let snapshot = metrics
                .snapshot(SnapshotRequest::default())
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let in_flight = snapshot
                .rpc
                .iter()
                .find(|m| m.method == ECHO)
                .map_or(0, |m| m.in_flight);
            (in_flight == 500).then_some(()).ok_or_else(|| {
                format!(
                    "{in_flight} in flight: {:?}",
                    snapshot
                        .rpc
                        .iter()
                        .map(|m| (&m.method, m.calls, m.in_flight))
                        .collect::<Vec<_>>()
                )
            })
        }
    })
    .await;
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
    let dial = vitals::client::Dial::mtls(
        &addr,
        &pki.path("ca.crt"),
        &pki.path("client.crt"),
        &pki.path("client.key"),
    )
    .unwrap();
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
