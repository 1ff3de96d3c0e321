//! remote_write: vitalsd pushes into a real Prometheus (`--web.enable-remote-write-
//! receiver`) and into a real VictoriaMetrics (a second receiver, written apart from
//! Prometheus), each stopped and started again on the same data directory to make an
//! outage; the file buffer carries what waited across a vitalsd restart; a receiver that
//! misbehaves never holds up serving, health or reload.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use vitals::proto::health::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::support::{
    TestDaemon, TestPki,
    prometheus::{Prometheus, scraped, wait_scraped},
};

const LIMIT: Duration = Duration::from_secs(30);
/// A pushed series: the test server certificate's identity (its first DNS SAN) is the
/// `instance`, and `site` comes from push.labels.
const SERIES: &str = "node_load1{instance=\"localhost\",site=\"test\"}";

fn push_dropin(url: &str, extra: &str) -> String {
    format!(
        "[push]\nurl = \"{url}\"\ninterval = \"1s\"\ntimeout = \"2s\"\nmin_backoff = \"100ms\"\nmax_backoff = \"500ms\"\nlabels = {{ site = \"test\" }}\n{extra}"
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The longest gap between consecutive sample times.
fn longest_gap(times: &[i64]) -> i64 {
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// Pushed series arrive in Prometheus with the device's identity as `instance` and the
/// configured labels: node_exporter's, the RPC counters and ours.
#[tokio::test]
async fn pushed_series_arrive_with_the_device_labels() {
    series_arrive(&Prometheus::start("", true).await).await;
}

/// The same in VictoriaMetrics, and its values are the daemon's own: a gauge that does not
/// move equals the page's, and a histogram arrives with its buckets.
#[tokio::test]
async fn pushed_series_arrive_in_victoria_metrics() {
    let victoria = Prometheus::victoria_metrics().await;
    let daemon = series_arrive(&victoria).await;
    let total = "node_memory_MemTotal_bytes";
    let pushed = victoria
        .wait_value(&format!("{total}{{site=\"test\"}}"), LIMIT, |_| true)
        .await;
    assert_eq!(Some(pushed), scraped(&daemon, total).await);
    let buckets = victoria
        .query("grpc_server_handling_seconds_bucket{site=\"test\",grpc_method=\"Echo\"}")
        .await;
    assert!(
        buckets.iter().any(|b| b["metric"]["le"] == "+Inf"),
        "{buckets:?}"
    );
}

async fn series_arrive(prometheus: &Prometheus) -> TestDaemon {
    let daemon = TestDaemon::start(&push_dropin(&prometheus.write_url(), "")).await;
    daemon.echo_ok().await;
    prometheus.wait_value(SERIES, LIMIT, |_| true).await;
    for series in [
        "vitals_build_info{instance=\"localhost\",site=\"test\"}",
        "vitals_health_serving{instance=\"localhost\",site=\"test\",service=\"vitals.echo.v1.Echo\"}",
        "node_memory_MemTotal_bytes{instance=\"localhost\",site=\"test\"}",
        "grpc_server_handled_total{instance=\"localhost\",site=\"test\",grpc_method=\"Echo\",grpc_code=\"OK\"}",
    ] {
        prometheus.wait_value(series, LIMIT, |v| v >= 1.0).await;
    }
    let sent = wait_scraped(&daemon, "vitals_push_samples_sent_total", LIMIT, |v| {
        v > 0.0
    })
    .await;
    assert!(sent > 100.0, "{sent}");
    daemon
}

/// Prometheus is down for several push intervals, then starts again on the same data
/// directory: the samples of the gap arrive from the buffer, oldest first, and the series
/// has no hole longer than about one interval.
#[tokio::test]
async fn an_outage_is_filled_from_the_buffer() {
    outage_filled(Prometheus::start("", true).await).await;
}

/// The same with VictoriaMetrics as the receiver that goes away.
#[tokio::test]
async fn a_victoria_metrics_outage_is_filled_from_the_buffer() {
    outage_filled(Prometheus::victoria_metrics().await).await;
}

async fn outage_filled(mut prometheus: Prometheus) {
    let daemon = TestDaemon::start(&push_dropin(&prometheus.write_url(), "")).await;
    let started = now_ms();
    prometheus.wait_value(SERIES, LIMIT, |_| true).await;
    // A few samples before the outage.
    wait_scraped(&daemon, "vitals_push_batches_sent_total", LIMIT, |n| {
        n >= 3.0
    })
    .await;

    prometheus.stop().await;
    let down = now_ms();
    wait_scraped(&daemon, "vitals_push_buffer_batches", LIMIT, |n| n >= 5.0).await;
    prometheus.restart().await;
    let up = now_ms();
    wait_scraped(&daemon, "vitals_push_buffer_batches", LIMIT, |n| n == 0.0).await;
    assert!(
        scraped(&daemon, "vitals_push_retries_total").await.unwrap() >= 1.0,
        "the push failed while Prometheus was down"
    );

    // And a few after it.
    let mut times = Vec::new();
    for _ in 0..100 {
        times = prometheus.sample_times(SERIES, "5m").await;
        if times.last().is_some_and(|&t| t > up + 2_000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    times.retain(|&t| t >= started);
    assert!(times.first().is_some_and(|&t| t < down), "{times:?}");
    assert!(times.last().is_some_and(|&t| t > up + 2_000), "{times:?}");
    let in_gap = times.iter().filter(|&&t| t > down && t < up).count();
    assert!(
        in_gap >= 4,
        "{in_gap} samples of the outage arrived: {times:?}"
    );
    let gap = longest_gap(&times);
    assert!(
        gap <= 1_500,
        "a hole of {gap} ms with a 1 s interval: {times:?}"
    );
    let dropped = scraped(&daemon, "vitals_push_samples_dropped_total").await;
    assert_eq!(dropped, Some(0.0));
}

/// With the file buffer on, vitalsd restarts while Prometheus is down: what the first run
/// buffered is pushed by the second once Prometheus is back, so nothing buffered is lost.
#[tokio::test]
async fn a_restart_keeps_the_file_buffer() {
    let mut prometheus = Prometheus::start("", true).await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("push");
    let dropin = push_dropin(
        &prometheus.write_url(),
        &format!("buffer_dir = \"{}\"\n", dir.display()),
    );
    let pki = Arc::new(TestPki::new());
    let mut first = TestDaemon::builder()
        .pki(pki.clone())
        .dropin(dropin.clone())
        .start()
        .await;
    prometheus.wait_value(SERIES, LIMIT, |_| true).await;

    prometheus.stop().await;
    let down = now_ms();
    let buffered = wait_scraped(&first, "vitals_push_buffer_batches", LIMIT, |n| n >= 3.0).await;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(15)).await.success());
    let stopped = now_ms();
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".rw")
        })
        .count();
    assert!(
        files as f64 >= buffered,
        "{files} files for {buffered} batches"
    );

    let second = TestDaemon::builder().pki(pki).dropin(dropin).start().await;
    wait_scraped(&second, "vitals_push_buffer_batches", LIMIT, |n| {
        n >= files as f64 + 1.0
    })
    .await;
    prometheus.restart().await;
    wait_scraped(&second, "vitals_push_buffer_batches", LIMIT, |n| n == 0.0).await;

    let times = prometheus.sample_times(SERIES, "5m").await;
    let first_run_buffered = times.iter().filter(|&&t| t > down && t <= stopped).count();
    assert!(
        first_run_buffered >= files,
        "{first_run_buffered} samples from the first run's buffer, {files} were on disk: {times:?}"
    );
    assert_eq!(
        scraped(&second, "vitals_push_samples_dropped_total").await,
        Some(0.0)
    );
}

/// How the fake receiver answers.
const ANSWER_500: u8 = 0;
const ANSWER_400: u8 = 1;
const ANSWER_GARBAGE: u8 = 2;
const ANSWER_NEVER: u8 = 3;

/// A receiver on loopback that answers every request as `mode` says.
async fn misbehaving_receiver(mode: Arc<AtomicU8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mode = mode.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                let mut have = 0;
                loop {
                    let Ok(n) = socket.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    // One request: headers, then Content-Length bytes.
                    let text = String::from_utf8_lossy(&buf[..have]).to_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if have < end + 4 + length {
                        continue;
                    }
                    have = 0;
                    let answer: &[u8] = match mode.load(Ordering::Relaxed) {
                        ANSWER_500 => {
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops"
                        }
                        ANSWER_400 => {
                            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\nout of order"
                        }
                        ANSWER_GARBAGE => b"\x00\x01\x02 not http at all\r\n\r\n",
                        _ => {
                            std::future::pending::<()>().await;
                            return;
                        }
                    };
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A receiver that answers 500, then 400, then garbage, then nothing at all: 5xx and
/// garbage are retried, a 400 drops its batch (counted, said once in the log), and all
/// along health answers at once, echo works, a scrape works and a reload applies.
#[tokio::test]
async fn a_misbehaving_receiver_never_blocks_serving() {
    let mode = Arc::new(AtomicU8::new(ANSWER_500));
    let url = misbehaving_receiver(mode.clone()).await;
    let daemon = TestDaemon::start(&push_dropin(&url, "")).await;
    let serving = || async {
        let started = std::time::Instant::now();
        let status = daemon
            .health()
            .await
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        daemon.echo_ok().await;
    };

    wait_scraped(&daemon, "vitals_push_retries_total", LIMIT, |n| n >= 3.0).await;
    serving().await;

    mode.store(ANSWER_400, Ordering::Relaxed);
    let rejected = wait_scraped(&daemon, "vitals_push_samples_rejected_total", LIMIT, |n| {
        n > 0.0
    })
    .await;
    wait_scraped(&daemon, "vitals_push_samples_rejected_total", LIMIT, |n| {
        n >= rejected * 3.0
    })
    .await;
    let said = daemon
        .logs()
        .iter()
        .filter(|l| l.contains("the receiver refused a push"))
        .count();
    assert_eq!(said, 1, "a refusal is said once");
    assert!(
        daemon.logs().iter().any(|l| l.contains("out of order")),
        "the refusal says why"
    );
    serving().await;

    mode.store(ANSWER_GARBAGE, Ordering::Relaxed);
    let retries = scraped(&daemon, "vitals_push_retries_total").await.unwrap();
    wait_scraped(&daemon, "vitals_push_retries_total", LIMIT, |n| {
        n >= retries + 2.0
    })
    .await;
    serving().await;

    mode.store(ANSWER_NEVER, Ordering::Relaxed);
    // The hanging request times out (2 s) and is retried; meanwhile everything answers.
    let retries = scraped(&daemon, "vitals_push_retries_total").await.unwrap();
    serving().await;
    daemon.rewrite_dropin(&push_dropin(&url, "[log]\nlevel = \"debug\"\n"));
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reloaded the config"))
        .await;
    serving().await;
    wait_scraped(&daemon, "vitals_push_retries_total", LIMIT, |n| n > retries).await;
    serving().await;
}

/// A push over mutual TLS with a client certificate that has serverAuth only (what the
/// device certificate used to get from certs/README.md's recipe and `--dev`) is said at
/// start, naming the missing clientAuth usage; a device certificate with serverAuth and
/// clientAuth (pki's `Usage::Device`, what `--dev` now makes) is not.
#[tokio::test]
async fn push_certificate_without_client_auth_is_said_at_start() {
    use vitals::pki::{Leaf, Usage};
    let pki = Arc::new(TestPki::new());
    let (device_cert, device_key) = pki.issue(
        "device",
        &Leaf::new("device", &["localhost"], Usage::Device, 30),
    );
    // Nothing listens there: only what is said at start matters.
    let url = "https://127.0.0.1:9/api/v1/write";
    let dropin = |extra: &str| {
        push_dropin(
            url,
            &format!(
                "auth = \"mtls\"\nca_cert = \"{}\"\n{extra}",
                pki.path("ca.crt").display()
            ),
        )
    };
    let server_only = TestDaemon::builder()
        .pki(pki.clone())
        .dropin(dropin(""))
        .start()
        .await;
    server_only
        .wait_for_log(|l| l.contains("no clientAuth extended key usage") && l.contains("push"))
        .await;
    let device = TestDaemon::builder()
        .pki(pki.clone())
        .dropin(dropin(&format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            device_cert.display(),
            device_key.display()
        )))
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !device
            .logs()
            .iter()
            .any(|l| l.contains("no clientAuth extended key usage")),
        "{:#?}",
        device.logs()
    );
}
